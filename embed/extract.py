"""Batch feature extraction: images -> pooled pre-logits -> embedding shards.

JPEG decoding, not the model, is usually the bottleneck, so images are decoded in DataLoader
workers and copied to the GPU from pinned memory without blocking. Files that cannot be decoded
are skipped, counted and listed, never fatal. Under ``torchrun`` each rank takes every
world-size-th shard of the same canonical order and writes into the same folder.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .datasets import ImageList, load_split
from .device_decode import (DeviceDecoder, Encoded, collate_encoded, load_encoded, resolve_decode,
                            transform_upsamples)
from .imaging import BadImage, DEFAULT_MAX_PIXELS, load_rgb
from .registry import LoadedModel, load_model, safe_model_key
from .settings import DEFAULT_DATA_ROOT, DEFAULT_EMBEDDINGS
from .store import EmbeddingStore, Manifest

log = logging.getLogger(__name__)



@dataclass
class ExtractConfig:
    model: str
    split: str
    data_root: Path = Path(DEFAULT_DATA_ROOT)
    out: Path = Path(DEFAULT_EMBEDDINGS)
    batch_size: Optional[int] = None      # None: 256 on GPU, 32 on CPU
    workers: Optional[int] = None         # None: by device and core count
    device: str = "auto"
    precision: str = "auto"               # auto: bf16 on GPUs that support it, else fp32
    channels_last: Optional[bool] = None  # None: on for convnets
    compile: bool = False
    decode: str = "auto"                  # auto: in DataLoader workers; device: JPEGs decoded on the model's device
    limit: Optional[int] = None
    checkpoint: Optional[Path] = None
    random_init: bool = False
    force: bool = False
    shard_size: int = 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    progress: bool = True


@dataclass
class ExtractResult:
    folder: Path
    n_images: int                 # images in the (limited) split
    n_embedded: int               # vectors on disk for it
    n_computed: int               # images decoded and embedded by this run (0: nothing to do)
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (relpath, reason)
    seconds: float = 0.0
    weights: str = ""

    @property
    def images_per_s(self) -> float:
        return self.n_computed / self.seconds if self.seconds > 0 else 0.0


# device and precision ---------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: no CUDA GPU is visible (use --device cpu or auto)")
    return device


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively (measured 1.6-3.5x faster than fp32 here)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype, or None for plain fp32.

    ``auto`` picks the fastest measured setting (benchmarks/README.md): bf16 on GPUs and on CPUs with
    native bf16 instructions, fp32 elsewhere (emulated bf16 on CPU is slower than fp32).
    """
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def default_batch_size(device: torch.device) -> int:
    return 256 if device.type == "cuda" else 32


def default_workers(device: torch.device) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return max(1, min(16, cores - 1))
    # on CPU the forward pass competes with decoding for the same cores
    return max(1, min(4, cores // 2))


def uses_channels_last(loaded: LoadedModel, requested: Optional[bool]) -> bool:
    if requested is not None:
        return requested
    name = loaded.spec.timm_name
    return not any(t in name for t in ("vit", "deit", "eva", "beit"))


class Embedder:
    """A loaded model placed on a device with its inference settings: tensors in, features out."""

    def __init__(self, loaded: LoadedModel, device: torch.device, precision: Optional[torch.dtype],
                 channels_last: bool, compile: bool = False):
        self.loaded = loaded
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        model = loaded.model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if compile else model

    @property
    def precision_name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.precision]

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.precision or torch.float32, enabled=self.precision is not None):
            feats = self.model(x)
        return feats.float()

    def embed_images(self, images: Sequence, decode: str = "workers") -> np.ndarray:
        """Embed PIL images (queries) with the preprocessing their collection was built with.

        ``decode`` is the extraction's mode: "device" means the tensor resize of ``--decode device``,
        so that a query and the vectors it is compared with went through the same resampling.
        """
        if decode == "device":
            items = [Encoded(i, None, torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1))
                     for i, im in enumerate(images)]
            _, batch, _ = DeviceDecoder(self.loaded.transform, self.device)(items, [])
        else:
            batch = torch.stack([self.loaded.transform(im) for im in images])
        return self(batch).cpu().numpy()


def build_embedder(model: str, checkpoint: Optional[Path] = None, random_init: bool = False, device: str = "auto",
                   precision: str = "auto", channels_last: Optional[bool] = None, compile: bool = False) -> Embedder:
    dev = resolve_device(device)
    loaded = load_model(model, checkpoint=checkpoint, random_init=random_init)
    return Embedder(loaded, dev, resolve_precision(precision, dev), uses_channels_last(loaded, channels_last), compile)


# data -------------------------------------------------------------------------------------------

class ImageFileDataset(Dataset):
    """(position, item or None, reason) for each requested canonical position.

    ``load(path, position)`` makes the item: a model-ready tensor, or an ``Encoded`` for device decoding.
    """

    def __init__(self, images: ImageList, positions: Sequence[int], load: Callable):
        self.images = images
        self.positions = list(positions)
        self.load = load

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        pos = self.positions[i]
        try:
            return pos, self.load(self.images.path(self.images.records[pos]), pos), ""
        except BadImage as e:
            return pos, None, e.reason
        except Exception as e:  # a transform failing on a pathological image must not end the run
            return pos, None, f"{type(e).__name__}: {e}"


def load_transformed(path, position: int, transform, max_pixels: int) -> torch.Tensor:
    return transform(load_rgb(path, max_pixels))


def collate_skipping(items):
    good = [(p, x) for p, x, _ in items if x is not None]
    bad = [(p, reason) for p, x, reason in items if x is None]
    positions = torch.tensor([p for p, _ in good], dtype=torch.int64)
    batch = torch.stack([x for _, x in good]) if good else None
    return positions, batch, bad


# distributed ------------------------------------------------------------------------------------

def dist_info() -> Tuple[int, int]:
    """(rank, world size) under torchrun; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def finish_distributed() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist
        dist.barrier()


# the run ----------------------------------------------------------------------------------------

def make_manifest(loaded: LoadedModel, full: ImageList, shard_size: int, precision: str,
                  decoder: Optional[DeviceDecoder] = None) -> Manifest:
    # device decoding gives slightly different pixels (tensor vs PIL resampling): never mix the two in one set
    transform = repr(loaded.transform) + (f"\n{decoder.describe()}" if decoder else "")
    return Manifest(
        model=loaded.spec.name, timm_name=loaded.spec.timm_name, dim=loaded.spec.dim,
        weights_source=loaded.weights.source, weights_fingerprint=loaded.weights.fingerprint,
        transform=transform, data_root=str(full.data_root), dataset=full.dataset_name,
        split=full.split, layout=full.layout, list_fingerprint=full.fingerprint(), shard_size=shard_size,
        relpaths=[r.relpath for r in full.records], class_ids=[r.class_id for r in full.records],
        precision=precision, extra={"weights_detail": loaded.weights.detail, "decode": "device" if decoder else "workers"},
    )


def embeddings_folder(out: Path, model: str, full: ImageList) -> Path:
    return EmbeddingStore.folder_for(out, safe_model_key(model), full.dataset_name, full.split)


def extract(cfg: ExtractConfig, embedder: Optional[Embedder] = None) -> ExtractResult:
    """Embed ``cfg.split`` (first ``cfg.limit`` images) into shards, computing only what is missing."""
    rank, world = dist_info()
    full = load_split(cfg.data_root, cfg.split)
    images = full.limited(cfg.limit)
    if embedder is None:
        embedder = build_embedder(cfg.model, cfg.checkpoint, cfg.random_init, cfg.device, cfg.precision,
                                  cfg.channels_last, cfg.compile)
    loaded = embedder.loaded
    upsampling = cfg.decode == "auto" and transform_upsamples(images, loaded.transform)
    decoder = DeviceDecoder(loaded.transform, embedder.device) \
        if resolve_decode(cfg.decode, embedder.device, upsampling) == "device" else None
    store = EmbeddingStore(embeddings_folder(cfg.out, cfg.model, full))
    if rank == 0:
        if loaded.weights.is_random:
            log.warning("%s runs with RANDOM weights: its vectors are marked as such everywhere", cfg.model)
        store.prepare(make_manifest(loaded, full, cfg.shard_size, embedder.precision_name, decoder), cfg.force)
    _barrier(world)

    todo = [(i, a, b) for i, a, b in EmbeddingStore.shard_ranges(len(images), cfg.shard_size)
            if i % world == rank and not store.shard_covers(i, a, b)]
    positions = [p for _, a, b in todo for p in range(a, b)]
    start_time = time.perf_counter()
    skipped_here: List[Tuple[int, str]] = []
    if positions:
        skipped_here = _run_shards(cfg, embedder, images, store, todo, positions, rank, decoder)
    seconds = time.perf_counter() - start_time
    _barrier(world)

    # the whole picture (all ranks, earlier runs) comes from the shards themselves
    stored_positions, _, skipped = store.load(len(images)) if rank == 0 else (np.zeros(0), None, skipped_here)
    result = ExtractResult(
        folder=store.folder, n_images=len(images), n_embedded=int(len(stored_positions)),
        n_computed=len(positions) - len(skipped_here), seconds=seconds, weights=loaded.weights.describe(),
        skipped=[(images.records[p].relpath, reason) for p, reason in skipped],
    )
    if rank == 0:
        _report(result)
    return result


def _run_shards(cfg, embedder: Embedder, images: ImageList, store: EmbeddingStore, todo, positions, rank,
                decoder: Optional[DeviceDecoder] = None):
    from tqdm import tqdm

    device = embedder.device
    batch_size = cfg.batch_size or default_batch_size(device)
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    if decoder is None:
        load, collate = partial(load_transformed, transform=embedder.loaded.transform, max_pixels=cfg.max_pixels), \
            collate_skipping
    else:
        load, collate = partial(load_encoded, max_pixels=cfg.max_pixels, decode_jpegs_here=device.type != "cuda"), \
            collate_encoded
    dataset = ImageFileDataset(images, positions, load)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
        pin_memory=device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        timeout=600 if workers > 0 else 0,  # a wedged worker ends the run with an error, not a hang
    )
    log.info("extracting %d images on %s (batch %d, %d workers, %s%s, decode on %s)", len(positions), device, batch_size,
             workers, embedder.precision_name, ", channels_last" if embedder.channels_last else "",
             "workers" if decoder is None else device)

    shards = iter(todo)
    index, start, stop = next(shards)
    buf_pos: List[np.ndarray] = []
    buf_vec: List[np.ndarray] = []
    buf_bad: List[Tuple[int, str]] = []
    all_bad: List[Tuple[int, str]] = []
    bar = tqdm(total=len(positions), unit="img", desc=f"{cfg.model}/{cfg.split}", disable=not cfg.progress or rank != 0,
               dynamic_ncols=True, smoothing=0.1)
    for loaded_batch in loader:
        pos, batch, bad = loaded_batch if decoder is None else decoder(*loaded_batch)
        feats = embedder(batch).cpu().numpy() if batch is not None else np.zeros((0, embedder.loaded.spec.dim), np.float32)
        pos = pos.numpy()
        buf_bad += bad
        all_bad += bad
        bar.update(len(pos) + len(bad))
        # a batch may straddle shards: hand each shard its part, write shards as they complete
        while True:
            inside = pos < stop
            buf_pos.append(pos[inside])
            buf_vec.append(feats[inside])
            pos, feats = pos[~inside], feats[~inside]
            seen = sum(len(p) for p in buf_pos) + sum(1 for b in buf_bad if b[0] < stop)
            if seen < stop - start:
                break
            store.write_shard(index, start, stop, np.concatenate(buf_pos), np.concatenate(buf_vec),
                              sorted(b for b in buf_bad if start <= b[0] < stop))
            log.debug("wrote shard %d (positions %d-%d)", index, start, stop)
            buf_bad = [b for b in buf_bad if b[0] >= stop]
            buf_pos, buf_vec = [], []
            try:
                index, start, stop = next(shards)
            except StopIteration:
                break
    bar.close()
    return all_bad


def _report(result: ExtractResult) -> None:
    if result.n_computed == 0 and not result.skipped:
        log.info("nothing to do: %d/%d images already embedded in %s", result.n_embedded, result.n_images, result.folder)
    else:
        log.info("embedded %d images in %.1f s (%.1f images/s); %d/%d on disk in %s", result.n_computed,
                 result.seconds, result.images_per_s, result.n_embedded, result.n_images, result.folder)
    if result.skipped:
        log.warning("skipped %d unreadable images:", len(result.skipped))
        for relpath, reason in result.skipped[:50]:
            log.warning("  %s: %s", relpath, reason)
        if len(result.skipped) > 50:
            log.warning("  ... and %d more (listed in the shards)", len(result.skipped) - 50)


def time_forward(embedder: Embedder, batch_size: int, image_size: int, iters: int = 5, warmup: int = 1) -> float:
    """Images/s of the bare model forward on a synthetic batch already in memory."""
    x = torch.randn(batch_size, 3, image_size, image_size)
    if embedder.device.type == "cuda":
        x = x.pin_memory()
    for _ in range(warmup):
        embedder(x)
    _sync(embedder.device)
    t = time.perf_counter()
    for _ in range(iters):
        embedder(x)
    _sync(embedder.device)
    return batch_size * iters / (time.perf_counter() - t)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
