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
from indexer.index_spec import IndexSpec, lite_note, with_dim
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
    index: str = "FLAT"  # IndexSpec.label of the collection's index after the build
    index_seconds: Optional[float] = None  # time to build (and load) the index, when this build built one
    labels: str = ""  # how the images are labelled, in words (CollectionMeta.labels_text)

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
    index: Optional[IndexSpec] = None,
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

    ``index``: the collection's index (None: keep the existing collection's, FLAT for a new one). The index is not
    part of the vectors' identity: another index on an existing collection rebuilds the index over the same rows,
    with no --recreate and no row sent again. On Milvus Lite an approximate type is built with a warning (Lite
    searches exactly whatever the index) or refused (IVF_PQ, DISKANN: Lite cannot build them).
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
    meta, vectors = _described(
        manifest, vectors, descriptor, whitening, normalize, embedder.loaded.spec.default_pooling
    )
    name = meta.key.collection_name
    class_ids = [manifest.class_ids[p] for p in positions]
    labels = meta.labels_text(class_ids)
    old = store.meta(name) if not recreate and store.has_collection(name) else None
    spec = with_dim(index if index is not None else (old.index if old is not None else IndexSpec()), meta.identity.dim)
    if store.is_lite and (note := lite_note(spec)):
        log.warning("%s: %s", name, note)
    meta.index = spec
    if old is not None and not (same := old.identity.compare(meta.identity)).interchangeable:
        if real and old.is_random:
            log.warning("%s was built with RANDOM weights: rebuilding it with %s", name, extracted.weights)
            recreate = True
        elif same.fields == ("data_fingerprint",) and old.labels != meta.labels:
            # the embeddings kept their vectors under the new labels (Manifest.relabelled): the collection follows
            log.warning(
                "%s: labels changed (%s -> %s): rebuilding it from the same vectors", name, old.labels, meta.labels
            )
            recreate = True
        elif cfg.force:
            # the shards were just recomputed on purpose: the collection follows them
            log.warning(
                "%s holds vectors made differently (%s): rebuilding it from the recomputed embeddings",
                name,
                same.words(),
            )
            recreate = True
    created = store.ensure_collection(name, meta, recreate=recreate)
    expected = len(positions)
    advice = server_advice(store.is_lite, name, expected, meta.dim, store.settings.lite_slow_rows_x_dim)
    if advice:
        log.warning(advice)
    stored = store.meta(name)
    index_changed = not created and stored is not None and not stored.index.same_index(spec)
    if stored is not None and not created:
        meta.index = (
            stored.index
        )  # what Milvus holds until _apply_index builds spec's (a crash before: rebuilt next time)
    if (
        not created
        and stored is not None
        and stored.complete
        and stored.rows == expected
        and store.count(name) == expected
    ):
        log.info("%s already holds all %d rows: nothing to insert", name, expected)
        index_seconds = _apply_index(store, name, stored, spec, index_changed, created)
        return BuildResult(
            name, expected, 0, len(extracted.skipped), 0.0, True, extracted.weights, spec.label, index_seconds, labels
        )

    relpaths = [manifest.relpaths[p] for p in positions]
    # the build is incomplete until the count is verified: a crash before that leaves complete=False
    meta.rows, meta.complete, meta.images = expected, False, extracted.n_images
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
    index_seconds = _apply_index(store, name, meta, spec, index_changed, created)
    log.info(
        "%s: %d rows (%d skipped images), upserted at %.0f rows/s",
        name,
        count,
        len(extracted.skipped),
        expected / seconds if seconds else 0,
    )
    return BuildResult(
        name,
        count,
        expected,
        len(extracted.skipped),
        seconds,
        False,
        extracted.weights,
        spec.label,
        index_seconds,
        labels,
    )


def _described(
    manifest, vectors, descriptor: Descriptor, whitening: Optional[Whitening], normalize: bool, default_pooling: str
):
    """The collection's metadata and rows under ``descriptor``'s post-processing of the raw pooled ``vectors``:
    the learned ``whitening`` (checked against the vectors it was learned for and the dimension asked), or unit
    length, or the raw vectors."""
    meta = CollectionMeta.from_manifest(manifest, normalized=normalize or descriptor.normalized)
    if descriptor.whiten:
        assert whitening is not None  # refused before extraction
        whitening.check_applies_to(manifest.identity)
        if descriptor.whiten_dim is not None and descriptor.whiten_dim != whitening.identity.dim_out:
            raise WhiteningRefused(
                f"{descriptor.name}: the whitening given maps to {whitening.identity.dim_out} dimensions, not "
                f"{descriptor.whiten_dim}"
            )
        return meta.whitened(descriptor.key_part(default_pooling), whitening), whitening.apply(vectors)
    return meta, (l2_normalize(vectors) if meta.normalized else vectors)


def _apply_index(
    store: VectorStore, name: str, meta: CollectionMeta, spec: IndexSpec, changed: bool, created: bool
) -> Optional[float]:
    """Give the complete collection ``spec``'s index and record it; the seconds the index took, when one was built.

    A changed index is rebuilt over the rows the collection holds. A new collection's approximate index is rebuilt
    too once every row is in: Milvus indexes rows only in sealed segments, in the background, and a search before it
    is done would run partly exhaustive (and a build time measured from the first row would be the insert's)."""
    seconds = None
    if changed:
        log.warning(
            "%s: index %s -> %s: rebuilding the index over the same vectors", name, meta.index.label, spec.label
        )
    if changed or (created and not spec.exact):
        seconds = store.rebuild_index(name, spec)
    meta.index, meta.complete = spec, True
    store.set_meta(name, meta)
    return seconds


def _random_embeddings(cfg: ExtractConfig, pooling: str = "") -> bool:
    """Whether the embeddings folder this run writes to holds vectors made with random weights."""
    dataset = Path(cfg.data_root).expanduser().resolve().name
    manifest = EmbeddingStore(EmbeddingKey(cfg.model, dataset, cfg.split, pooling).folder(cfg.out)).read_manifest()
    return manifest is not None and manifest.identity.is_random
