"""The GPU benchmark, one prepared command: ``python -m benchmarks.run --device cuda`` (under 8 minutes on one GPU).

1. forward: GResNet (fused), ConvNeXt-T and ViT-S at batch 256, 224 px, bf16 autocast, channels_last for
   the two convnets, ``torch.compile``d, with the eager figure beside each. The weights are seeded random ones
   (every row says ``random init``): throughput does not depend on the weights' values, and this machine may have
   none of the three checkpoints.
2. paired: fused GResNet, unfused GResNet, timm's ``resnet50d`` (plain and with SiLU) and ``resnet50d_splitnorm``
   in interleaved rounds, fp32 and bf16, batch 256, channels_last, eager: issue 24's fusion ratios
   (``benchmarks.paired.bench_paired``, the CPU suite's ``paired`` section, on the GPU and with fewer networks).
3. e2e: extraction from JPEG files with effnet-lite0 (real ImageNet weights from its pip package) on
   Tiny-ImageNet val and on the same images re-encoded at 500x375, decoded by PIL in the DataLoader workers
   (``--decode workers``) and by nvJPEG on the GPU (``--decode device``); the two modes' vectors are compared image
   by image (cosine), the figure that decides whether ``--decode auto`` may pick the nvJPEG path on GPUs.

Order: eager forwards, paired rounds, e2e, then the compiled forwards (the slowest to start). Each step checks the
time left in the budget and is skipped with a reason, not cut off, when it would not fit.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from benchmarks.forward import imagenet_sized_copy, seeded_model, time_forward
from benchmarks.paired import bench_paired
from embed.common.settings import RetrievalSettings
from embed.models.catalog import BLOG_MODELS

log = logging.getLogger("benchmarks")

BUDGET_S = 480.0
BATCH = 256
SIZE = 224
FORWARD_MODELS = BLOG_MODELS
E2E_MODEL = "effnet-lite0"
E2E_IMAGES = {False: 10000, True: 2048}  # Tiny-ImageNet files, by --quick
E2E_LARGE_IMAGES = 2048  # of them re-encoded at 500x375 (not with --quick)
# the paired rounds' networks on a GPU: every network of issue 24's targets, and resnet50d's geometry built from
# GResNet's layers (the fold's cost where the stem is not wider); 7 rounds give a 98.4% interval of each median
PAIRED_NETWORKS = ("gresnet", "gresnet_unfused", "resnet50d", "resnet50d_silu", "resnet50d_splitnorm")
PAIRED_ROUNDS = 7
# per network and round: half a dozen batches of 256 or more on a current GPU, so that the 70 timings fit in about a
# minute and leave the compiled forwards their time
PAIRED_MIN_SECONDS = 0.5
# time a step is allowed to need (compile included): estimates, since none of this has run on a GPU yet
STEP_NEEDS_S = {"forward_eager": 20.0, "paired": 90.0, "forward_compile": 120.0, "e2e": 90.0}


class NoCuda(RuntimeError):
    """``--device cuda`` on a machine where torch sees no CUDA device."""


def require_cuda() -> torch.device:
    if not torch.cuda.is_available():
        raise NoCuda(
            f"--device cuda: torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is "
            f"False). Run it on a machine with an NVIDIA GPU and a CUDA build of torch, or use "
            f"--device cpu for the CPU benchmarks."
        )
    return torch.device("cuda")


class Budget:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def allows(self, step: str) -> bool:
        return self.left() >= STEP_NEEDS_S[step]

    def shortfall(self) -> str:
        """Why a step that ``allows`` refused is skipped."""
        return f"not enough time left in the {self.seconds:.0f} s budget ({self.left():.0f} s)"


def bench_gpu_forward(device: torch.device, budget: Budget, compile: bool, quick: bool = False) -> List[Dict]:

    rows = []
    step = "forward_compile" if compile else "forward_eager"
    for name in FORWARD_MODELS:
        channels_last = name != "vit"  # a ViT has one conv, its patch embedding
        row = {
            "model": name,
            "size": SIZE,
            "batch": BATCH,
            "precision": "bf16",
            "channels_last": channels_last,
            "compile": compile,
            "weights": "random init (speed only)",
            "images_per_s": None,
        }
        if not budget.allows(step):
            row["skipped"] = budget.shortfall()
        else:
            start = time.perf_counter()
            try:
                row["images_per_s"] = round(
                    time_forward(
                        seeded_model(name),
                        BATCH,
                        SIZE,
                        device,
                        torch.bfloat16,
                        channels_last,
                        compile,
                        min_seconds=1.0 if quick else 3.0,
                        warmup=3,
                    ),
                    1,
                )
            except Exception as e:  # an unsupported combination is reported, not fatal
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            row["seconds"] = round(time.perf_counter() - start, 1)
            torch.cuda.empty_cache()
        log.info("gpu forward %s", row)
        rows.append(row)
    return rows


def bench_gpu_paired(device: torch.device, budget: Budget, quick: bool = False) -> Dict:
    """The paired rounds of ``PAIRED_NETWORKS``, or why they were skipped or failed."""

    if not budget.allows("paired"):
        return {"skipped": budget.shortfall()}
    start = time.perf_counter()
    try:
        paired = bench_paired(
            device, quick, rounds=PAIRED_ROUNDS, networks=PAIRED_NETWORKS, min_seconds=PAIRED_MIN_SECONDS
        )
    except Exception as e:  # never run on a GPU before: a failure is reported, and the later steps still run
        log.warning("gpu paired rounds failed: %s", e)
        paired = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    paired["seconds"] = round(time.perf_counter() - start, 1)
    torch.cuda.empty_cache()
    return paired


def decode_agreement(a: np.ndarray, b: np.ndarray) -> Dict:
    """Per-image cosine between two sets of vectors of the same images (rows aligned)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    cos = (a * b).sum(axis=1)
    return {
        "images": int(len(cos)),
        "cosine_mean": round(float(cos.mean()), 5),
        "cosine_p1": round(float(np.percentile(cos, 1)), 5),
        "cosine_min": round(float(cos.min()), 5),
    }


def bench_gpu_e2e(
    device: torch.device, budget: Budget, tiny: Path, config: RetrievalSettings, quick: bool = False
) -> Dict:
    from embed.extraction.embedder import build_embedder, default_workers
    from embed.extraction.extract import ExtractConfig, extract
    from embed.models.weights import WeightsUnavailable

    out: Dict = {"rows": [], "agreement": []}
    if not (tiny / "val" / "val_annotations.txt").is_file():
        out["skipped"] = f"no Tiny-ImageNet at {tiny} (set TINY_IMAGENET)"
        return out
    n = E2E_IMAGES[quick]
    try:
        emb = build_embedder(E2E_MODEL, device=str(device), settings=config)
    except WeightsUnavailable as e:  # its pip package missing: the cosine still compares the two decoders
        log.warning("%s; the e2e rows use RANDOM weights", e)
        emb = build_embedder(E2E_MODEL, random_init=True, device=str(device), settings=config)
    bare = emb.time_forward(BATCH, emb.loaded.data_config["input_size"][-1], iters=20)
    with tempfile.TemporaryDirectory() as data_tmp:
        datasets = [("tiny-imagenet 64px", tiny, n)]
        if not quick:
            datasets.append(
                (
                    "500x375 re-encoded",
                    imagenet_sized_copy(tiny, E2E_LARGE_IMAGES, Path(data_tmp) / "big"),
                    E2E_LARGE_IMAGES,
                )
            )
        for files, root, limit in datasets:
            vectors: Dict[str, np.ndarray] = {}
            for decode in ("workers", "device"):
                if not budget.allows("e2e"):
                    out["rows"].append(
                        {
                            "model": E2E_MODEL,
                            "files": files,
                            "decode": decode,
                            "skipped": budget.shortfall(),
                        }
                    )
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    cfg = ExtractConfig(
                        model=E2E_MODEL,
                        split="val",
                        data_root=root,
                        out=Path(tmp),
                        limit=limit,
                        batch_size=BATCH,
                        device=str(device),
                        progress=False,
                        shard_size=10**6,
                        decode=decode,
                        settings=config,
                    )
                    try:
                        result = extract(cfg, embedder=emb, keep_vectors=True)
                    except Exception as e:  # the nvJPEG path has never run on a GPU before this benchmark
                        out["rows"].append(
                            {
                                "model": E2E_MODEL,
                                "files": files,
                                "decode": decode,
                                "error": f"{type(e).__name__}: {str(e)[:300]}",
                            }
                        )
                        log.warning("gpu e2e %s %s failed: %s", files, decode, e)
                        continue
                assert result.vectors is not None  # keep_vectors=True
                vectors[decode] = result.vectors
                out["rows"].append(
                    {
                        "model": E2E_MODEL,
                        "files": files,
                        "images": result.n_computed,
                        "batch": BATCH,
                        "decode": decode,
                        "workers": default_workers(device),
                        "precision": emb.precision_name,
                        "channels_last": emb.channels_last,
                        "weights": emb.loaded.weights.source,
                        "e2e_images_per_s": round(result.images_per_s, 1),
                        "bare_forward_images_per_s": round(bare, 1),
                        "pipeline_efficiency": round(result.images_per_s / bare, 3),
                    }
                )
                log.info("gpu e2e %s", out["rows"][-1])
            if len(vectors) == 2 and len(vectors["workers"]) == len(vectors["device"]):
                out["agreement"].append(
                    {"model": E2E_MODEL, "files": files, **decode_agreement(vectors["workers"], vectors["device"])}
                )
                log.info("decode agreement %s", out["agreement"][-1])
    return out


def bench_gpu(
    device: torch.device, tiny: Path, config: RetrievalSettings, quick: bool = False, budget_s: Optional[float] = None
) -> Dict:
    budget = Budget(BUDGET_S if budget_s is None else budget_s)
    torch.backends.cudnn.benchmark = True
    # the compiles take longest: they come last, so that a slow compile cannot cost the e2e figures
    forward = bench_gpu_forward(device, budget, compile=False, quick=quick)
    paired = bench_gpu_paired(device, budget, quick)
    e2e = bench_gpu_e2e(device, budget, tiny, config, quick)
    forward += bench_gpu_forward(device, budget, compile=True, quick=quick)
    return {
        # "fp32" convolutions run in TF32 where cuDNN allows it (its default): the paired fp32 rows say so
        "cudnn_allow_tf32": device.type == "cuda" and torch.backends.cudnn.allow_tf32,
        "forward": forward,
        "paired": paired,
        "e2e": e2e,
        "budget_s": budget.seconds,
        "budget_left_s": round(budget.left(), 1),
    }
