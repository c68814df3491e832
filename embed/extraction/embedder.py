"""The model runner: a loaded model on a device with its precision and memory layout.

Tensors in, pooled features out. Also where devices, precisions and forward timing are resolved,
so that extraction, queries, evaluation and benchmarks all make the same choices.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from embed.common.descriptor import DEFAULT, Descriptor
from embed.common.settings import RetrievalSettings
from embed.extraction.host_memory import keep_freed_memory
from embed.models.registry import LoadedModel, load_model


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the GPU when one is visible, else the CPU; an explicit GPU that is missing is an error.

    Every model run resolves its device here, so a CPU run also gets its host memory kept for reuse
    (embed/extraction/host_memory.py) wherever it runs: extraction, checks, queries, benchmarks, as the entry
    point's settings say (``host_memory.apply_settings``).
    """
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: no CUDA GPU is visible (use --device cpu or auto)")
    if device.type == "cpu":
        keep_freed_memory()
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


def precision_name(dtype: Optional[torch.dtype]) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast_to(device: torch.device, precision: Optional[torch.dtype]) -> torch.autocast:
    """The autocast context of a ``resolve_precision`` result: off (plain fp32) for None."""
    return torch.autocast(device.type, dtype=precision or torch.float32, enabled=precision is not None)


def default_batch_size(device: torch.device) -> int:
    return 256 if device.type == "cuda" else 32


def default_workers(device: torch.device) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return max(1, min(16, cores - 1))
    # on CPU the forward pass competes with decoding for the same cores
    return max(1, min(4, cores // 2))


def uses_channels_last(loaded: LoadedModel, requested: Optional[bool]) -> bool:
    """An explicit request wins; otherwise the model's registry entry says which layout it prefers."""
    return loaded.spec.channels_last if requested is None else requested


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(
    step, batch_size: int, device: torch.device, warmup: int = 1, iters: Optional[int] = None, min_seconds: float = 0.0
) -> float:
    """Throughput of ``step()`` (one batch each call): ``iters`` calls, or at least 3 and ``min_seconds``."""
    for _ in range(warmup):
        step()
    sync(device)
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += 1
        sync(device)
        elapsed = time.perf_counter() - start
        if (iters is not None and n >= iters) or (iters is None and elapsed >= min_seconds and n >= 3):
            return batch_size * n / elapsed


class Embedder:
    """A loaded model placed on a device with its inference settings: tensors in, features out.

    ``poolings`` are the descriptors' poolings it computes from one forward pass (embed/models/pooling_heads.py);
    ``__call__`` gives the first, ``embed_pooled`` all of them. Only the model's own pooling runs ``model(x)``
    as it always has; any other runs ``forward_features`` once and each pooling head on its output.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        device: torch.device,
        precision: Optional[torch.dtype],
        channels_last: bool,
        compile: bool = False,
        poolings: Sequence[Descriptor] = (Descriptor(),),
    ):
        from embed.models.pooling_heads import pooling_head

        self.loaded = loaded
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        model = loaded.model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if compile else model
        spec = loaded.spec
        self.poolings: List[Descriptor] = []
        for d in poolings:
            d.check_for(spec.tokens, spec.name)
            if d.pooled.resolved(spec.default_pooling) not in self.poolings:
                self.poolings.append(d.pooled.resolved(spec.default_pooling))
        self.own_only = [d.pooling for d in self.poolings] == [spec.default_pooling]
        heads = [pooling_head(model, d, spec.tokens, spec.default_pooling) for d in self.poolings]
        self.heads = [torch.compile(h) if compile else h for h in heads]
        forward_features: Callable = model.forward_features  # type: ignore[assignment]  # timm models define it
        self.features = torch.compile(forward_features) if compile and not self.own_only else None

    def pooling_keys(self) -> List[str]:
        """Each pooling's key part (``""`` for the model's own), in ``embed_pooled``'s order."""
        return [d.key_part(self.loaded.spec.default_pooling) for d in self.poolings]

    @property
    def precision_name(self) -> str:
        return precision_name(self.precision)

    @property
    def dim(self) -> int:
        return self.loaded.spec.dim

    @torch.inference_mode()
    def embed_pooled(self, batch: torch.Tensor) -> List[torch.Tensor]:
        """Every pooling's (B, dim) float32 vectors of one forward pass, in ``self.poolings``' order."""
        x = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_to(self.device, self.precision):
            if self.own_only:
                return [self.model(x).float()]
            forward_features = self.features or self.loaded.model.forward_features
            feats = forward_features(x)  # type: ignore[operator]
            return [head(feats).float() for head in self.heads]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.embed_pooled(batch)[0]

    def embed_images(self, images: Sequence, decode: str = "workers") -> np.ndarray:
        """Embed PIL images (queries) with the preprocessing their collection was built with.

        ``decode`` is the extraction's mode: "device" means the tensor resize of ``--decode device``,
        so that a query and the vectors it is compared with went through the same resampling.
        """
        from embed.extraction.reader import transform_pil_images

        return self(transform_pil_images(images, self.loaded.transform, self.device, decode)).cpu().numpy()

    def time_forward(self, batch_size: int, image_size: int, iters: int = 5, warmup: int = 1) -> float:
        """Images/s of the bare model forward on a synthetic batch already in memory."""
        x = torch.randn(batch_size, 3, image_size, image_size)
        if self.device.type == "cuda":
            x = x.pin_memory()
        return images_per_second(lambda: self(x), batch_size, self.device, warmup=warmup, iters=iters)


def build_embedder(
    model: str,
    checkpoint: Optional[Path] = None,
    random_init: bool = False,
    device: str = "auto",
    precision: str = "auto",
    channels_last: Optional[bool] = None,
    compile: bool = False,
    poolings: Sequence[Descriptor] = (Descriptor(DEFAULT),),
    settings: Optional[RetrievalSettings] = None,
) -> Embedder:
    """``model`` on ``device`` with its weights (``settings``: where downloads are cached, see ``load_model``)."""
    dev = resolve_device(device)
    loaded = load_model(model, checkpoint=checkpoint, random_init=random_init, settings=settings)
    return Embedder(
        loaded, dev, resolve_precision(precision, dev), uses_channels_last(loaded, channels_last), compile, poolings
    )
