"""The paired rounds: fused GResNet against its unfused self, timm's resnet50d and the fusion variants, timed in
interleaved rounds (the CPU suite's ``paired`` section and the GPU benchmark's ``paired`` step), with the stage
timings and the operator profile that say where a ratio's difference comes from."""

from __future__ import annotations

import copy
import logging
import os
import statistics
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch

from benchmarks.forward import PRECISIONS, seeded_model, time_forward

# defined beside the renderer, which must not need torch; the paired rounds and the ratios read it
from benchmarks.report import PAIRED_RATIOS, per_round_ratios

log = logging.getLogger("benchmarks")


def _fused(unfused):
    from timm.utils import reparameterize_model

    return reparameterize_model(copy.deepcopy(unfused))


def _seeded(make):
    torch.manual_seed(0)
    return make()


# how each network of the paired rounds is made, from the others it is made of (``network(name)``)
PAIRED_BUILDS: Dict[str, Callable[[Callable[[str], Any]], Any]] = {
    "gresnet": lambda network: _fused(network("gresnet_unfused")),
    "gresnet_unfused": lambda network: _fv().nontrivial(seeded_model("gresnet", False)),
    "gresnet_postnorm": lambda network: _fv().postnorm_twin(network("gresnet_unfused")),
    "gresnet_naive_fold": lambda network: _fv().naive_fold(network("gresnet")),
    "gresnet_mean_subtract": lambda network: _fv().mean_subtract(network("gresnet")),
    "resnet50d": lambda network: seeded_model("resnet50d"),
    "resnet50d_silu": lambda network: seeded_model("resnet50d", act_layer="silu"),
    "resnet50d_splitnorm": lambda network: _fused(network("resnet50d_splitnorm_unfused")),
    "resnet50d_splitnorm_naive_fold": lambda network: _fv().naive_fold(network("resnet50d_splitnorm")),
    # not timed: the reference of its fold
    "resnet50d_splitnorm_unfused": lambda network: _seeded(lambda: _fv().nontrivial(_fv().resnet50d_splitnorm())),
}
# the fewest networks that still run every part of the paired section (ratios, stage timings, operator profile)
SMOKE_PAIRED_NETWORKS = ("gresnet", "resnet50d", "resnet50d_silu")
PAIRED_TIMED = tuple(name for name in PAIRED_BUILDS if name != "resnet50d_splitnorm_unfused")
# each fold against the unfused network it came from; the naive folds show what exactness is for
PAIRED_FOLDS_OF = {
    "gresnet": "gresnet_unfused",
    "gresnet_mean_subtract": "gresnet_unfused",
    "gresnet_naive_fold": "gresnet_unfused",
    "resnet50d_splitnorm": "resnet50d_splitnorm_unfused",
    "resnet50d_splitnorm_naive_fold": "resnet50d_splitnorm_unfused",
}


def _fv():
    from benchmarks import fusion_variants

    return fusion_variants


def bench_paired(
    device: torch.device,
    quick: bool,
    rounds: int = 5,
    networks: Optional[Tuple[str, ...]] = None,
    min_seconds: float = 2.0,
    batch: Optional[int] = None,
    timer: Optional[Callable[[str, Any, Optional[torch.dtype]], float]] = None,
) -> Dict:
    """The GResNet ratios from interleaved rounds (A, B, C, D, A, B, C, D, ...), medians of per-round ratios.

    On a shared 2-core VM a model's throughput drifts by 10-20% between runs minutes apart; a
    ratio of two figures taken at different times inherits that drift, a per-round ratio does not.
    ``resnet50d_silu`` is timm's resnet50d with SiLU (GResNet's activation) and its batch norms unfused;
    the ``gresnet_*`` variants (benchmarks/fusion_variants.py) have GResNet's exact architecture, and
    ``resnet50d_splitnorm`` has resnet50d's geometry with GResNet's layers, so their ratios isolate the cost of
    the fold from the cost of the wider stem; ``stage_ms_fp32`` says which parts of the networks differ. On a CPU,
    ``op_ms`` says which kinds of operator take the time and ``conv_ceiling`` how far the convolutions alone let the
    ratios against resnet50d go.

    ``networks`` times only those (the ratios between them; default all), each call for at least ``min_seconds``,
    at ``batch`` images (default 256 on a GPU, 16 on a CPU). ``timer(name, model, precision)`` gives one round's
    images/s of a network (default ``time_forward``; the tests give known throughputs).
    """
    from benchmarks import fusion_variants as fv

    batch = batch or (256 if device.type == "cuda" else 16)
    networks = networks if networks is not None else PAIRED_TIMED
    torch.empty(1, device=device)  # a device that cannot run fails now, not after minutes of building networks
    built: Dict[str, Any] = {}

    def network(name: str):
        # each network once, and only those timed or needed to make or check them (the fold's reference)
        if name not in built:
            built[name] = PAIRED_BUILDS[name](network)
        return built[name]

    models = {name: network(name) for name in networks}
    unfused_of = {fold: network(reference) for fold, reference in PAIRED_FOLDS_OF.items() if fold in models}
    out: Dict = {
        "rounds": 2 if quick else rounds,
        "batch": batch,
        "size": 224,
        "channels_last": True,
        "compile": False,
        "load_avg_start": [round(v, 2) for v in os.getloadavg()],
        "gmacs_224": {k: round(fv.macs(m) / 1e9, 3) for k, m in models.items()},
        "max_rel_err_vs_unfused_224": {
            k: float(f"{fv.max_relative_error(models[k], reference):.2e}")
            for k, reference in unfused_of.items()
            if k in models
        },
    }
    if timer is None:

        def timer(name: str, model: Any, precision: Optional[torch.dtype]) -> float:
            return time_forward(model, batch, 224, device, precision, True, False, min_seconds)

    for pname, prec in PRECISIONS.items():
        samples: Dict[str, List[float]] = {k: [] for k in models}
        for _ in range(out["rounds"]):
            for name, model in models.items():
                samples[name].append(timer(name, model, prec))
        out[pname] = {
            "images_per_s": {k: [round(v, 2) for v in vs] for k, vs in samples.items()},
            **{
                ratio: round(statistics.median(per_round_ratios(samples, ratio)), 3)
                for ratio, pair in PAIRED_RATIOS.items()
                if all(name in models for name in pair)
            },
        }
        log.info("paired %s %s", pname, out[pname])
    # the part timings are single passes, noisier than the whole-model figures: more rounds than those
    out["stage_ms_fp32"] = time_stages(
        {k: models[k] for k in ("gresnet", "resnet50d_splitnorm", "resnet50d_silu") if k in models},
        batch,
        device,
        out["rounds"] + 4,
    )
    profiled: Dict[str, Any] = {k: models[k] for k in ("gresnet", "resnet50d", "resnet50d_silu") if k in models}
    # on a CPU only: the profiler's CPU times would be kernel launches on a GPU
    if device.type == "cpu" and len(profiled) == 3:
        out["op_ms"] = {
            pname: time_by_op(profiled, batch, device, prec, out["rounds"]) for pname, prec in PRECISIONS.items()
        }
        out["conv_ceiling"] = conv_ceilings(out["op_ms"])
    out["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    return out


def time_stages(models: Dict[str, Any], batch: int, device: torch.device, rounds: int) -> Dict[str, Dict[str, float]]:
    """Median milliseconds of each part of ``fusion_variants.stages`` for one fp32 batch, the models interleaved:
    where a whole-model ratio's difference comes from."""
    from benchmarks import fusion_variants as fv

    x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    parts = {name: fv.stages(model.to(device, memory_format=torch.channels_last)) for name, model in models.items()}
    samples: Dict[str, Dict[str, List[float]]] = {name: {p: [] for p, _ in ps} for name, ps in parts.items()}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, ps in parts.items():
                # the first pass warms this model's buffers up after the other models ran; the second is timed
                for timed in (False, True):
                    y = x
                    for part, module in ps:
                        start = time.perf_counter()
                        y = module(y)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        if timed:
                            samples[name][part].append(time.perf_counter() - start)
    return {
        name: {part: round(statistics.median(v) * 1000, 1) for part, v in per.items()} for name, per in samples.items()
    }


# aten operators by what they do, the first matching fragment deciding; the rest is "other" (allocation, views)
OP_KINDS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("convolution", ("conv",)),
    ("batch norm", ("batch_norm",)),
    ("matrix product", ("addmm", "matmul", "linear", "aten::mm", "bmm")),
    ("activation", ("silu", "relu", "clamp_min", "gelu", "sigmoid")),
    ("add", ("add",)),
    ("pooling", ("pool",)),
    ("dtype casts", ("copy_", "_to_copy")),
)
# the fused GResNet ratios whose targets are set against networks with fewer multiply-adds
CEILING_RATIOS = ("fused_over_resnet50d", "fused_over_resnet50d_silu")


def op_kind(name: str) -> str:
    for kind, fragments in OP_KINDS:
        if any(f in name for f in fragments):
            return kind
    return "other"


def time_by_op(
    models: Dict[str, Any], batch: int, device: torch.device, precision: Optional[torch.dtype], rounds: int
) -> Dict[str, Dict[str, float]]:
    """Median ms per batch (eager, channels_last, 224 px) that each kind of operator (``OP_KINDS``) takes, and the
    whole step ("total"), from one profiled step per model and round, the models interleaved.

    Self CPU times: on a CPU an operator's intra-op threads work inside its call, so this is its wall time.
    """
    from collections import defaultdict

    from torch.profiler import ProfilerActivity, profile

    from embed.extraction.embedder import autocast_to

    x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    nets = {name: model.to(device, memory_format=torch.channels_last) for name, model in models.items()}
    samples: Dict[str, Dict[str, List[float]]] = {name: defaultdict(list) for name in nets}
    for _ in range(rounds):
        for name, model in nets.items():
            with (
                torch.inference_mode(),
                autocast_to(device, precision),
            ):
                model(x)  # warms this model's buffers up after the other models ran
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    start = time.perf_counter()
                    model(x)
                    wall = time.perf_counter() - start
            per = ms_by_kind(((e.key, e.self_cpu_time_total) for e in prof.key_averages()), wall)
            for kind, ms in per.items():
                samples[name][kind].append(ms)
    return {
        name: {k: round(statistics.median(v), 1) for k, v in per_kind.items()} for name, per_kind in samples.items()
    }


def ms_by_kind(self_us: Iterable[Tuple[str, float]], wall_s: float) -> Dict[str, float]:
    """Milliseconds per kind of operator (``OP_KINDS``, then "other") from (operator, self microseconds) pairs, and
    the step's wall time as "total", in that order."""
    per = {kind: 0.0 for kind in [k for k, _ in OP_KINDS] + ["other"]}
    for op, us in self_us:
        per[op_kind(op)] += us / 1000
    return {**per, "total": wall_s * 1000}


def conv_ceilings(op_ms: Dict[str, Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, float]]:
    """The most each ``CEILING_RATIOS`` ratio could be: the reference's whole forward over fused GResNet's
    convolutions alone (a ratio of the medians ``time_by_op`` gives), as if every other operator of GResNet cost
    nothing. Any exact fold runs these same convolutions (the multiply-adds are the architecture's), so a target
    above its ceiling is out of any fold's reach on that machine and kernel library."""
    return {
        precision: {
            ratio: round(per_model[PAIRED_RATIOS[ratio][1]]["total"] / per_model["gresnet"]["convolution"], 3)
            for ratio in CEILING_RATIOS
        }
        for precision, per_model in op_ms.items()
    }
