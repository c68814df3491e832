"""Batch feature extraction: image files -> pooled pre-logits -> embedding shards.

Composes the three parts, each with one job: the reader (files -> model-ready batches, reader.py),
the model runner (batches -> vectors, embedder.py) and the shard writer (vectors -> atomic shards,
shards.py). Only the positions not on disk are computed (a shard cut short by a smaller ``--limit`` is
extended); under ``torchrun`` each rank takes every world-size-th shard of the same canonical order and
writes into the same folder.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Set, Tuple

import numpy as np

from embed.common.descriptor import Descriptor
from embed.common.identity import VectorSetIdentity
from embed.common.settings import RetrievalSettings
from embed.extraction import distributed
from embed.extraction.device_decode import resolve_decode, transform_upsamples
from embed.extraction.embedder import Embedder, build_embedder, default_batch_size, default_workers
from embed.extraction.reader import ImageReader
from embed.extraction.shards import EmbeddingStore, Manifest, ShardWriter
from embed.sources.datasets import ImageList, LabelSource, load_images
from embed.sources.imaging import MAX_IMAGE_PIXELS

log = logging.getLogger(__name__)


@dataclass
class ExtractConfig:
    model: str
    split: str
    data_root: Path
    out: Path  # the embeddings folder
    batch_size: Optional[int] = None  # None: 256 on GPU, 32 on CPU
    workers: Optional[int] = None  # None: by device and core count
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 on GPUs that support it, else fp32
    channels_last: Optional[bool] = None  # None: as the model's registry entry prefers
    compile: bool = False
    decode: str = "auto"  # auto: the mode measured fastest for the device and files
    limit: Optional[int] = None
    checkpoint: Optional[Path] = None
    random_init: bool = False
    force: bool = False
    shard_size: int = 1024
    max_pixels: int = MAX_IMAGE_PIXELS
    progress: bool = True
    # the poolings computed from each forward pass, each stored as its own shard set (its own identity);
    # post-processing (unit length, whitening) is applied later, to the stored raw vectors
    descriptors: Sequence[Descriptor] = (Descriptor(),)
    labels: LabelSource = field(default_factory=LabelSource)  # layout: the benchmark layout's own annotations
    settings: Optional[RetrievalSettings] = None  # the entry point's, for the weights (None: load_model's fallback)

    def images(self) -> ImageList:
        """The full image list this run embeds (before ``limit``)."""
        return load_images(self.data_root, self.split, self.labels)


@dataclass
class ExtractResult:
    folder: Path
    manifest: Manifest
    n_images: int  # images in the (limited) split
    n_embedded: int  # vectors on disk for it
    n_computed: int  # images decoded and embedded by this run (0: nothing to do)
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (relpath, reason)
    seconds: float = 0.0
    weights: str = ""
    # with keep_vectors: every embedded (position, vector) of the split, in canonical order
    positions: Optional[np.ndarray] = None
    vectors: Optional[np.ndarray] = None

    @property
    def images_per_s(self) -> float:
        return self.n_computed / self.seconds if self.seconds > 0 else 0.0


def vector_set_identity(embedder: Embedder, images: ImageList, decode: str, pooling: str = "") -> VectorSetIdentity:
    """The identity of the raw vectors ``embedder`` makes of ``images`` when they are decoded as ``decode`` and
    pooled as ``pooling`` (a ``Descriptor.key_part``: "" for the model's own pooling)."""
    loaded = embedder.loaded
    return VectorSetIdentity(
        model=loaded.spec.name,
        timm_name=loaded.spec.timm_name,
        dim=loaded.spec.dim,
        weights_source=loaded.weights.source,
        weights_fingerprint=loaded.weights.fingerprint,
        dataset=images.dataset_name,
        data_fingerprint=images.fingerprint(),
        split=images.split,
        transform=repr(loaded.transform),
        decode=decode,
        precision=embedder.precision_name,
        descriptor=pooling,
    )


def make_manifest(
    embedder: Embedder, full: ImageList, shard_size: int, reader: ImageReader, pooling: str = ""
) -> Manifest:
    return Manifest(
        identity=vector_set_identity(embedder, full, reader.decode, pooling),
        data_root=str(full.data_root),
        layout=full.layout,
        labels=full.labels.text,
        shard_size=shard_size,
        relpaths=[r.relpath for r in full.records],
        class_ids=[r.class_id for r in full.records],
        weights_detail=embedder.loaded.weights.detail,
    )


def load_embedder(cfg: ExtractConfig) -> Embedder:
    """The model ``cfg`` names with its weights (WeightsUnavailable when there are none) and ``cfg``'s poolings:
    what an extraction runs, loaded by it or, first, by a caller such as ``indexer build`` that opens the database
    only once a model is ready."""
    return build_embedder(
        cfg.model,
        cfg.checkpoint,
        cfg.random_init,
        cfg.device,
        cfg.precision,
        cfg.channels_last,
        cfg.compile,
        [d.pooled for d in cfg.descriptors],
        cfg.settings,
    )


def make_reader(cfg: ExtractConfig, embedder: Embedder, images: ImageList) -> ImageReader:
    upsampling = cfg.decode == "auto" and transform_upsamples(images, embedder.loaded.transform)
    device = embedder.device
    return ImageReader(
        images,
        embedder.loaded.transform,
        device,
        resolve_decode(cfg.decode, device, upsampling),
        batch_size=cfg.batch_size or default_batch_size(device),
        workers=default_workers(device) if cfg.workers is None else cfg.workers,
        max_pixels=cfg.max_pixels,
    )


def extract(cfg: ExtractConfig, embedder: Optional[Embedder] = None, keep_vectors: bool = False) -> ExtractResult:
    """Embed ``cfg.split`` (first ``cfg.limit`` images) into shards, computing only what is missing: the
    result of the first pooling (see ``extract_poolings``)."""
    return extract_poolings(cfg, embedder, keep_vectors)[0]


def extract_poolings(
    cfg: ExtractConfig, embedder: Optional[Embedder] = None, keep_vectors: bool = False
) -> List[ExtractResult]:
    """Embed ``cfg.split`` (first ``cfg.limit`` images) into one shard set per pooling of ``cfg.descriptors`` (or
    of ``embedder``'s poolings when one is given), all from the same forward passes; an image is decoded and
    run once if any of the shard sets lacks it. One result per pooling, in the embedder's order.

    ``keep_vectors`` also hands back every vector of the split (those computed now from memory, earlier
    ones read once), so that a caller such as ``indexer build`` never reads the shards again.
    """
    rank, world = distributed.rank_and_world()
    full = cfg.images()
    images = full.limited(cfg.limit)
    if rank == 0:
        log.info("%s/%s: %s", full.dataset_name, full.split, images.labels_line())
    if embedder is None:
        embedder = load_embedder(cfg)
    reader = make_reader(cfg, embedder, images)
    manifests = [make_manifest(embedder, full, cfg.shard_size, reader, key) for key in embedder.pooling_keys()]
    stores = [EmbeddingStore(m.key.folder(cfg.out)) for m in manifests]
    if rank == 0:
        if embedder.loaded.weights.is_random:
            log.warning("%s runs with RANDOM weights: its vectors are marked as such everywhere", cfg.model)
        for store, manifest in zip(stores, manifests):
            store.prepare(manifest, cfg.force)
    distributed.barrier()

    writers, wanted = [], []
    for store in stores:
        todo = store.missing_shards(len(images), cfg.shard_size, rank, world)
        writers.append(ShardWriter(store, todo, embedder.dim, keep=keep_vectors))
        wanted.append({p for task in todo for p in task.todo})
    positions = sorted(set().union(*wanted))
    start_time = time.perf_counter()
    if positions:
        _embed(cfg, embedder, reader, writers, wanted, positions, rank)
    seconds = time.perf_counter() - start_time
    distributed.barrier()

    results = []
    for store, manifest, writer, want in zip(stores, manifests, writers, wanted):
        result = ExtractResult(
            folder=store.folder,
            manifest=manifest,
            n_images=len(images),
            n_embedded=0,
            n_computed=len(want) - len(writer.skipped),
            seconds=seconds,
            weights=embedder.loaded.weights.describe(),
        )
        if rank == 0:
            # the whole picture (all ranks, earlier runs) comes from the shards, each read at most once
            stored_positions, vectors, skipped = store.load(len(images), in_memory=writer.written)
            result.n_embedded = int(len(stored_positions))
            result.skipped = [(images.records[p].relpath, reason) for p, reason in skipped]
            if keep_vectors:
                result.positions, result.vectors = stored_positions, vectors
            _report(result)
        else:
            result.skipped = [(images.records[p].relpath, reason) for p, reason in writer.skipped]
        results.append(result)
    return results


def _embed(
    cfg: ExtractConfig,
    embedder: Embedder,
    reader: ImageReader,
    writers: List[ShardWriter],
    wanted: List[Set[int]],
    positions: List[int],
    rank: int,
) -> None:
    from tqdm import tqdm

    log.info(
        "extracting %d images on %s (batch %d, %d workers, %s%s, %s; poolings %s)",
        len(positions),
        embedder.device,
        reader.batch_size,
        reader.workers,
        embedder.precision_name,
        ", channels_last" if embedder.channels_last else "",
        reader.describe(),
        ", ".join(d.pooling_name for d in embedder.poolings),
    )
    everywhere = all(len(w) == len(positions) for w in wanted)
    with tqdm(
        total=len(positions),
        unit="img",
        desc=f"{cfg.model}/{cfg.split}",
        dynamic_ncols=True,
        smoothing=0.1,
        disable=not cfg.progress or rank != 0,
    ) as bar:
        for pos, batch, bad in reader.batches(positions):
            if batch is not None:
                pooled = [feats.cpu().numpy() for feats in embedder.embed_pooled(batch)]
            else:
                pooled = [np.zeros((0, embedder.dim), np.float32)] * len(writers)
            for writer, want, feats in zip(writers, wanted, pooled):
                if everywhere:
                    writer.add(pos, feats, bad)
                else:  # this shard set lacks only some of the positions computed for the others
                    mask = np.fromiter((int(p) in want for p in pos), bool, len(pos))
                    writer.add(pos[mask], feats[mask], [b for b in bad if b[0] in want])
            bar.update(len(pos) + len(bad))


def _report(result: ExtractResult) -> None:
    if result.n_computed == 0 and not result.skipped:
        log.info(
            "nothing to do: %d/%d images already embedded in %s", result.n_embedded, result.n_images, result.folder
        )
    else:
        log.info(
            "embedded %d images in %.1f s (%.1f images/s); %d/%d on disk in %s",
            result.n_computed,
            result.seconds,
            result.images_per_s,
            result.n_embedded,
            result.n_images,
            result.folder,
        )
    if result.skipped:
        log.warning("skipped %d unreadable images:", len(result.skipped))
        for relpath, reason in result.skipped[:50]:
            log.warning("  %s: %s", relpath, reason)
        if len(result.skipped) > 50:
            log.warning("  ... and %d more (listed in the shards)", len(result.skipped) - 50)
