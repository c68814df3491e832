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
from typing import List, Optional, Tuple

import numpy as np

from embed.common import settings
from embed.common.identity import EmbeddingKey, VectorSetIdentity
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
    data_root: Path = field(default_factory=lambda: Path(settings.current().data_root))
    out: Path = field(default_factory=lambda: Path(settings.current().embeddings))
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
    labels: LabelSource = field(default_factory=LabelSource)  # layout: the benchmark layout's own annotations

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


def vector_set_identity(embedder: Embedder, images: ImageList, decode: str) -> VectorSetIdentity:
    """The identity of the raw vectors ``embedder`` makes of ``images`` when they are decoded as ``decode``."""
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
    )


def make_manifest(embedder: Embedder, full: ImageList, shard_size: int, reader: ImageReader) -> Manifest:
    return Manifest(
        identity=vector_set_identity(embedder, full, reader.decode),
        data_root=str(full.data_root),
        layout=full.layout,
        labels=full.labels.text,
        shard_size=shard_size,
        relpaths=[r.relpath for r in full.records],
        class_ids=[r.class_id for r in full.records],
        weights_detail=embedder.loaded.weights.detail,
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
    """Embed ``cfg.split`` (first ``cfg.limit`` images) into shards, computing only what is missing.

    ``keep_vectors`` also hands back every vector of the split (those computed now from memory, earlier
    ones read once), so that a caller such as ``indexer build`` never reads the shards again.
    """
    rank, world = distributed.rank_and_world()
    full = cfg.images()
    images = full.limited(cfg.limit)
    if rank == 0:
        log.info("%s/%s: %s", full.dataset_name, full.split, images.labels_line())
    if embedder is None:
        embedder = build_embedder(
            cfg.model, cfg.checkpoint, cfg.random_init, cfg.device, cfg.precision, cfg.channels_last, cfg.compile
        )
    reader = make_reader(cfg, embedder, images)
    manifest = make_manifest(embedder, full, cfg.shard_size, reader)
    store = EmbeddingStore(EmbeddingKey(cfg.model, full.dataset_name, full.split).folder(cfg.out))
    if rank == 0:
        if embedder.loaded.weights.is_random:
            log.warning("%s runs with RANDOM weights: its vectors are marked as such everywhere", cfg.model)
        store.prepare(manifest, cfg.force)
    distributed.barrier()

    todo = store.missing_shards(len(images), cfg.shard_size, rank, world)
    writer = ShardWriter(store, todo, embedder.dim, keep=keep_vectors)
    positions = [p for task in todo for p in task.todo]
    start_time = time.perf_counter()
    if positions:
        _embed(cfg, embedder, reader, writer, positions, rank)
    seconds = time.perf_counter() - start_time
    distributed.barrier()

    result = ExtractResult(
        folder=store.folder,
        manifest=manifest,
        n_images=len(images),
        n_embedded=0,
        n_computed=len(positions) - len(writer.skipped),
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
    return result


def _embed(
    cfg: ExtractConfig, embedder: Embedder, reader: ImageReader, writer: ShardWriter, positions: List[int], rank: int
) -> None:
    from tqdm import tqdm

    log.info(
        "extracting %d images on %s (batch %d, %d workers, %s%s, %s)",
        len(positions),
        embedder.device,
        reader.batch_size,
        reader.workers,
        embedder.precision_name,
        ", channels_last" if embedder.channels_last else "",
        reader.describe(),
    )
    with tqdm(
        total=len(positions),
        unit="img",
        desc=f"{cfg.model}/{cfg.split}",
        dynamic_ncols=True,
        smoothing=0.1,
        disable=not cfg.progress or rank != 0,
    ) as bar:
        for pos, batch, bad in reader.batches(positions):
            feats = embedder(batch).cpu().numpy() if batch is not None else np.zeros((0, embedder.dim), np.float32)
            writer.add(pos, feats, bad)
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
