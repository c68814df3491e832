"""``indexer build``: embeddings (cached or extracted now) -> the model's Milvus collection."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from embed.extract import ExtractConfig, extract
from embed.store import EmbeddingStore
from embed.vectors import l2_normalize

from .lite_advice import server_advice
from .store import CollectionMeta, StoreError, VectorStore, collection_name

log = logging.getLogger(__name__)


class CountMismatch(StoreError):
    pass


@dataclass
class BuildResult:
    collection: str
    rows: int
    inserted: int
    skipped_images: int
    insert_seconds: float
    already_complete: bool
    weights: str

    @property
    def rows_per_s(self) -> float:
        return self.inserted / self.insert_seconds if self.insert_seconds > 0 else 0.0


def build(cfg: ExtractConfig, store: VectorStore, normalize: bool = False, recreate: bool = False,
          progress: bool = True, embedder=None) -> BuildResult:
    """Extract what is missing, then make the collection hold exactly the embedded images."""
    extracted = extract(cfg, embedder=embedder)
    emb = EmbeddingStore(extracted.folder)
    manifest = emb.read_manifest()
    positions, vectors, skipped = emb.load(extracted.n_images)
    if normalize:
        vectors = l2_normalize(vectors)
    name = collection_name(manifest.model, manifest.dataset, manifest.split)
    meta = CollectionMeta(
        model=manifest.model, timm_name=manifest.timm_name, dim=manifest.dim,
        weights_source=manifest.weights_source, weights_fingerprint=manifest.weights_fingerprint,
        dataset=manifest.dataset, data_root=manifest.data_root, split=manifest.split, normalized=normalize,
        precision=manifest.precision, extra={"weights_detail": manifest.extra.get("weights_detail", ""), "layout": manifest.layout,
               "decode": manifest.extra.get("decode", "workers")},
    )
    created = store.ensure_collection(name, meta, recreate=recreate)
    expected = len(positions)
    advice = server_advice(store.is_lite, name, expected, manifest.dim)
    if advice:
        log.warning(advice)
    stored = store.meta(name)
    if not created and stored is not None and stored.complete and stored.rows == expected \
            and store.count(name) == expected:
        log.info("%s already holds all %d rows: nothing to insert", name, expected)
        return BuildResult(name, expected, 0, len(skipped), 0.0, True, extracted.weights)

    class_ids = [manifest.class_ids[p] for p in positions]
    relpaths = [manifest.relpaths[p] for p in positions]
    # the build is incomplete until the count is verified: a crash before that leaves complete=False
    meta.rows, meta.complete = expected, False
    store.set_meta(name, meta)
    t = time.perf_counter()
    store.upsert(name, positions, vectors, class_ids, relpaths, progress=progress)
    store.flush(name)
    seconds = time.perf_counter() - t
    count = store.count(name)
    if count > expected:
        # an earlier build covered more images (a larger --limit): keep the collection equal to this build
        store.delete_ids_from(name, extracted.n_images)
        store.flush(name)
        count = store.count(name)
    if count != expected:
        raise CountMismatch(f"{name}: {count} rows after the build, expected {expected}; rerun the build to repair")
    meta.complete = True
    store.set_meta(name, meta)
    log.info("%s: %d rows (%d skipped images), upserted at %.0f rows/s", name, count, len(skipped),
             expected / seconds if seconds else 0)
    return BuildResult(name, count, expected, len(skipped), seconds, False, extracted.weights)
