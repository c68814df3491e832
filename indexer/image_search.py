"""Many query images in one process: the model loads once, every image is answered or named with its error."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

from embed.sources.imaging import has_image_extension
from indexer.catalog import IndexedCollection
from indexer.milvus_store import VectorStore
from indexer.query_embedding import QueryEmbedder

log = logging.getLogger(__name__)

EMBED_CHUNK = 32  # images decoded and embedded at a time: bounded memory for long lists


@dataclass
class QueryAnswer:
    image: str
    hits: List[Dict] = field(default_factory=list)
    error: Optional[str] = None
    indexed_id: Optional[int] = None  # the query is this indexed image (left out of its hits unless asked)


def expand_query_paths(paths: Iterable[Path]) -> List[Path]:
    """Files as given, folders replaced by the image files under them (sorted); order kept otherwise.

    A named file is always tried (its error is reported); inside folders only image extensions count.
    """
    out: List[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and has_image_extension(f.name))
            others = sum(1 for f in p.rglob("*") if f.is_file() and not has_image_extension(f.name))
            if others:
                log.info("%s: ignoring %d file(s) without an image extension", p, others)
            if not found:
                log.warning("%s: no image files in this folder", p)
            out.extend(found)
        else:
            out.append(p)
    return out


def _load(path: Path):
    """(image, None) or (None, a reason that names the file)."""
    from embed.sources.imaging import BadImage, load_rgb

    if not path.exists():
        return None, f"{path}: no such file or folder"
    try:
        return load_rgb(path), None
    except BadImage as e:
        return None, f"{path}: {e.reason}"


def indexed_relpath(path: Path, split_folder: Path) -> Optional[str]:
    """The path a collection would store for ``path`` (relative to its split folder), or None if it lies outside."""
    try:
        return path.resolve().relative_to(split_folder.resolve()).as_posix()
    except ValueError:
        return None


def search_images(
    store: VectorStore,
    coll: IndexedCollection,
    embedder: Callable[[], QueryEmbedder],
    paths: List[Path],
    k: int,
    include_self: bool = False,
) -> List[QueryAnswer]:
    """One answer per path, in order: hits by squared L2, or the reason the file could not be used.

    A query that is one of the collection's own images is left out of its hits, as the app and the evaluation
    leave a query out (leave-one-out), unless ``include_self``. ``embedder`` is called (once) when the first
    readable image needs it: files that are all missing or refused are answered at once, without loading the
    model (seconds, and torch).
    """
    answers: List[QueryAnswer] = []
    n_rows = store.count(coll.name)
    split_folder = Path(coll.meta.data_root) / coll.meta.split
    loaded_embedder: Optional[QueryEmbedder] = None
    for start in range(0, len(paths), EMBED_CHUNK):
        chunk = paths[start : start + EMBED_CHUNK]
        loaded = [_load(p) for p in chunk]
        good = [(p, im) for p, (im, _) in zip(chunk, loaded) if im is not None]
        relpaths = {p: indexed_relpath(p, split_folder) for p, _ in good}
        held = store.ids_of_paths(coll.name, [r for r in relpaths.values() if r is not None]) if good else {}
        own = [held.get(relpaths[p] or "", -1) for p, _ in good]  # -1: no row of the collection to leave out
        if good and loaded_embedder is None:
            loaded_embedder = embedder()
        hits = iter(
            store.search(
                coll.name,
                loaded_embedder.embed([im for _, im in good]),
                k=k,
                n_rows=n_rows,
                exclude_self_ids=None if include_self else own,
                params=coll.meta.index.search_params(k=k),
            )
            if good and loaded_embedder is not None
            else []
        )
        ids = iter(own)
        for p, (im, err) in zip(chunk, loaded):
            if im is None:
                answers.append(QueryAnswer(str(p), error=err))
                continue
            indexed = next(ids)
            answers.append(QueryAnswer(str(p), next(hits), indexed_id=None if indexed < 0 else indexed))
    return answers
