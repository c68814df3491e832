"""``indexer build``: embeddings (cached or extracted now) -> the model's Milvus collection."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from embed.common.descriptor import Descriptor
from embed.common.identity import EmbeddingKey
from embed.common.vectors import l2_normalize
from embed.extraction.extract import ExtractConfig, extract, load_embedder  # noqa: F401  (load_embedder: the CLI's)
from embed.extraction.shards import EmbeddingStore
from indexer.lite_advice import server_advice
from indexer.milvus_store import CollectionMeta, StoreError, VectorStore
from indexer.whitening import Whitening, WhiteningRefused

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


def build(
    cfg: ExtractConfig,
    store: VectorStore,
    normalize: bool = False,
    recreate: bool = False,
    progress: bool = True,
    embedder=None,
    descriptor: Descriptor = Descriptor(),
    whitening: Optional[Whitening] = None,
) -> BuildResult:
    """Extract what is missing, then make the collection hold exactly the embedded images.

    ``descriptor`` picks the pooling (its shards are extracted) and the post-processing: unit length, or the
    learned ``whitening`` (required for a ``-white`` descriptor), recorded in the collection's identity by
    fingerprint, with the artifact's path for the queries. The default descriptor builds today's collection.

    The collection and the shards carry one identity (embed.common.identity.VectorSetIdentity), compared
    field by field. Embeddings and a collection made with random weights are replaced without asking once
    real weights are available: random vectors are never worth keeping. ``--force`` recomputes the
    embeddings and rebuilds a collection that no longer matches them; any other difference needs
    ``--recreate``.
    """
    cfg = replace(cfg, descriptors=[descriptor.pooled])
    if embedder is None:
        embedder = load_embedder(cfg)
    if descriptor.whiten and whitening is None:
        raise WhiteningRefused(
            f"{descriptor.name} needs a learned whitening: learn one with `python -m indexer whiten --model "
            f"{cfg.model} --split SPLIT --pooling {descriptor.pooling_name} ...` and pass it with --whitening PATH"
        )
    real = not embedder.loaded.weights.is_random
    if real and not cfg.force and _random_embeddings(cfg, embedder.pooling_keys()[0]):
        log.warning(
            "%s: embeddings on disk were made with RANDOM weights; replacing them with %s",
            cfg.model,
            embedder.loaded.weights.describe(),
        )
        cfg = replace(cfg, force=True)
    extracted = extract(cfg, embedder=embedder, keep_vectors=True)
    manifest, positions, vectors = extracted.manifest, extracted.positions, extracted.vectors
    assert positions is not None and vectors is not None  # keep_vectors=True
    meta = CollectionMeta.from_manifest(manifest, normalized=normalize or descriptor.normalized)
    if descriptor.whiten:
        assert whitening is not None  # refused above
        whitening.check_applies_to(manifest.identity)
        if descriptor.whiten_dim is not None and descriptor.whiten_dim != whitening.identity.dim_out:
            raise WhiteningRefused(
                f"{descriptor.name}: the whitening given maps to {whitening.identity.dim_out} dimensions, not "
                f"{descriptor.whiten_dim}"
            )
        vectors = whitening.apply(vectors)
        meta = meta.whitened(descriptor.key_part(embedder.loaded.spec.default_pooling), whitening)
    elif meta.normalized:
        vectors = l2_normalize(vectors)
    name = meta.key.collection_name
    old = store.meta(name) if not recreate and store.has_collection(name) else None
    if old is not None and old.identity != meta.identity:
        if real and old.is_random:
            log.warning("%s was built with RANDOM weights: rebuilding it with %s", name, extracted.weights)
            recreate = True
        elif cfg.force:
            # the shards were just recomputed on purpose: the collection follows them
            log.warning(
                "%s holds vectors made differently (%s): rebuilding it from the recomputed embeddings",
                name,
                old.identity.describe_differences(meta.identity),
            )
            recreate = True
    created = store.ensure_collection(name, meta, recreate=recreate)
    expected = len(positions)
    advice = server_advice(store.is_lite, name, expected, meta.dim)
    if advice:
        log.warning(advice)
    stored = store.meta(name)
    if (
        not created
        and stored is not None
        and stored.complete
        and stored.rows == expected
        and store.count(name) == expected
    ):
        log.info("%s already holds all %d rows: nothing to insert", name, expected)
        return BuildResult(name, expected, 0, len(extracted.skipped), 0.0, True, extracted.weights)

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
    log.info(
        "%s: %d rows (%d skipped images), upserted at %.0f rows/s",
        name,
        count,
        len(extracted.skipped),
        expected / seconds if seconds else 0,
    )
    return BuildResult(name, count, expected, len(extracted.skipped), seconds, False, extracted.weights)


def _random_embeddings(cfg: ExtractConfig, pooling: str = "") -> bool:
    """Whether the embeddings folder this run writes to holds vectors made with random weights."""
    dataset = Path(cfg.data_root).expanduser().resolve().name
    manifest = EmbeddingStore(EmbeddingKey(cfg.model, dataset, cfg.split, pooling).folder(cfg.out)).read_manifest()
    return manifest is not None and manifest.identity.is_random
