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
            f"{store.describe_target()} (indexed: {have}). {build_hint(store, everything, model, split, dataset)}"
        )
    names = ", ".join(c.meta.dataset for c in matches)
    raise CollectionNotFound(f"{model}/{split} is indexed for several datasets ({names}): pass --data-root to choose")


def build_hint(
    store: VectorStore, everything: List[IndexedCollection], model: str, split: str, dataset: Optional[str] = None
) -> str:
    """What to run for a missing collection: a build command that runs as written, on a data root this database
    already indexes and that has ``split``; or, when no indexed data set has that split, the splits there are."""
    import shlex
    from pathlib import Path

    from embed.common import settings
    from embed.sources.datasets import available_splits

    uri = "" if store.uri == settings.current().milvus_uri else f" --uri {shlex.quote(store.uri)}"
    roots = sorted({c.meta.data_root for c in everything if dataset is None or c.meta.dataset == dataset})
    for root in roots:
        if (Path(root) / split).is_dir():
            return (
                f"Build it: python -m indexer build --model {shlex.quote(model)} --split {shlex.quote(split)} "
                f"--data-root {shlex.quote(root)}{uri}"
            )
    if roots:
        splits = sorted({c.meta.split for c in everything} | {s for r in roots for s in available_splits(Path(r))})
        return (
            f"No indexed data set has a split {split!r} ({', '.join(roots)} hold: {', '.join(splits) or 'none'}): "
            f"choose one of those with --split, or build from a data root that has it (--data-root DIR)."
        )
    return (
        f"Nothing is indexed here yet: build a collection first, e.g. the README's quick start "
        f"`python -m indexer build --model all --split val --dataset tiny-imagenet --limit 1000{uri}`, or your own "
        f"images with --data-root DIR (the folder holding the split folders) instead of --dataset."
    )
