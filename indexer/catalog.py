"""Which collections this tool made, and finding the one for a model and split (no torch: status, the app's start)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from indexer.milvus_store import CollectionMeta, StoreError, VectorStore

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
    from embed.models.catalog import check_model_name
    check_model_name(model)  # unknown model -> the list of valid names
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
