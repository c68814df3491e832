"""Finding a model's collection and embedding queries with the weights that built it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from embed.vectors import l2_normalize

from .store import CollectionMeta, StoreError, VectorStore

if TYPE_CHECKING:  # torch stays unloaded for lookups (status, the app's start-up)
    from embed.embedder import Embedder


class CollectionNotFound(StoreError):
    pass


@dataclass
class IndexedCollection:
    name: str
    meta: CollectionMeta


def indexed_collections(store: VectorStore) -> List[IndexedCollection]:
    """Collections made by this tool (they carry our metadata), in name order."""
    out = []
    for name in store.list_collections():
        try:
            meta = store.meta(name)
        except StoreError:
            continue
        if meta is not None:
            out.append(IndexedCollection(name, meta))
    return out


def find_collection(store: VectorStore, model: str, split: str, dataset: Optional[str] = None) -> IndexedCollection:
    from embed.registry import get_spec
    get_spec(model)  # unknown model -> the list of valid names
    everything = indexed_collections(store)
    matches = [c for c in everything if c.meta.key.matches(model, split, dataset)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        have = ", ".join(str(c.meta.key) for c in everything) or "none"
        raise CollectionNotFound(
            f"no collection for model {model!r}, split {split!r}{f', dataset {dataset!r}' if dataset else ''} in "
            f"{store.describe_target()} (indexed: {have}). Build it: python -m indexer build --model {model} "
            f"--split {split} --data-root DIR")
    names = ", ".join(c.meta.dataset for c in matches)
    raise CollectionNotFound(f"{model}/{split} is indexed for several datasets ({names}): pass --data-root to choose")


def embedder_for(meta: CollectionMeta, checkpoint: Optional[Path] = None, device: str = "auto") -> "Embedder":
    """An embedder with the same weights and precision as the collection, or a clear error."""
    from embed.embedder import build_embedder
    if meta.weights_source == "random":
        emb = build_embedder(meta.model, random_init=True, device=device, precision=meta.precision)
    elif meta.weights_source == "checkpoint":
        path = checkpoint or (Path(meta.weights_detail) if meta.weights_detail else None)
        if path is None or not Path(path).is_file():
            raise StoreError(f"{meta.model} was indexed with a checkpoint file; pass it with --checkpoint")
        emb = build_embedder(meta.model, checkpoint=Path(path), device=device, precision=meta.precision)
    else:
        emb = build_embedder(meta.model, device=device, precision=meta.precision)
    got = emb.loaded.weights.fingerprint
    if got != meta.weights_fingerprint:
        raise StoreError(f"{meta.model}: the weights found now ({got[:30]}) are not the ones the collection was "
                         f"built with ({meta.weights_fingerprint[:30]}); rebuild with --recreate or pass --checkpoint")
    return emb


def embed_query(emb: "Embedder", image, meta: CollectionMeta):
    """One image as a query vector for a collection: same preprocessing and normalisation as its rows."""
    return embed_queries(emb, [image], meta)


def embed_queries(emb: "Embedder", images, meta: CollectionMeta):
    """PIL images as one (n, dim) batch of query vectors for a collection, made as its rows were."""
    vec = emb.embed_images(list(images), decode=meta.decode)
    return l2_normalize(vec) if meta.normalized else vec
