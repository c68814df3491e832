"""What several descriptors from one forward pass cost over one: ``embed extract --descriptors avg,gem3,max``.

    python -m benchmarks.descriptors [--model effnet-lite0] [--rounds 7] [--out benchmarks/results/cpu-2core/descriptors-DATE.json]
    python -m benchmarks.descriptors --quick      # seconds: a tiny timm test net, for the test suite

Times the model runner (``Embedder.embed_pooled``) on one batch already in memory, so decoding does not hide the
difference: "one" is the model's own pooling alone (``model(x)``, as extraction has always run), "several" the
listed poolings from one ``forward_features`` pass (its pooling heads on the same feature map). The two settings
alternate within each round (paired, the machine's load shared), each timed for at least --seconds. Reported: per
round images/s of both, the median of the per-round ratios several/one as extra time, and whether it is within the
5% target. Whole-pipeline extraction adds decoding and shard writing to both, so its extra share is smaller still.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import statistics
from pathlib import Path
from typing import Dict, List

import torch

from benchmarks import benchmark_settings, cpu_model, cpu_result_path
from embed.common.settings import RetrievalSettings

log = logging.getLogger(__name__)
TARGET_EXTRA = 0.05


def run(
    model: str, poolings: str, batch: int, rounds: int, seconds: float, random_init: bool, config: RetrievalSettings
) -> Dict:
    from embed.common.descriptor import parse_descriptors
    from embed.extraction.embedder import build_embedder, images_per_second

    several = parse_descriptors(poolings)
    one = build_embedder(model, random_init=random_init, device="cpu", settings=config)
    many = build_embedder(model, random_init=random_init, device="cpu", poolings=several, settings=config)
    size = one.loaded.data_config["input_size"][-1]
    x = torch.randn(batch, 3, size, size)
    per_round: List[Dict[str, float]] = []
    for r in range(rounds):
        order = (("one", one), ("several", many)) if r % 2 == 0 else (("several", many), ("one", one))
        timing = {
            name: images_per_second(
                lambda e=emb: e(x) if e is one else e.embed_pooled(x), batch, one.device, min_seconds=seconds
            )
            for name, emb in order
        }
        timing["extra"] = timing["one"] / timing["several"] - 1
        per_round.append({k: round(v, 4) for k, v in timing.items()})
        log.info(
            "round %d: one %.1f img/s, several %.1f img/s (%+.1f%%)",
            r,
            timing["one"],
            timing["several"],
            100 * timing["extra"],
        )
    extra = statistics.median(t["extra"] for t in per_round)
    return {
        "model": model,
        "weights": one.loaded.weights.describe(),
        "precision": one.precision_name,
        "batch": batch,
        "input_size": size,
        "one": one.poolings[0].name,
        "several": [d.name for d in many.poolings],
        "rounds": per_round,
        "median_extra_time": round(extra, 4),
        "target_extra_time": TARGET_EXTRA,
        "within_target": extra <= TARGET_EXTRA,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="effnet-lite0")
    p.add_argument("--poolings", default="avg,gem3,max", help="the several poolings (default %(default)s)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per setting and round")
    p.add_argument("--quick", action="store_true", help="timm:test_efficientnet, batch 4, 2 short rounds")
    p.add_argument(
        "--out", type=Path, default=None, help="JSON (default: benchmarks/results/cpu-2core/descriptors-DATE.json)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.quick:
        args.model, args.batch, args.rounds, args.seconds = "timm:test_efficientnet", 4, 2, 0.2
    config = benchmark_settings()
    result = run(args.model, args.poolings, args.batch, args.rounds, args.seconds, args.quick, config)
    doc = {
        "benchmark": "descriptors",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0],
        },
        "quick": args.quick,
        **result,
    }
    out = args.out or cpu_result_path("descriptors", "-quick" if args.quick else "")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(
        f"{result['model']}: {', '.join(result['several'])} from one forward pass cost "
        f"{100 * result['median_extra_time']:+.1f}% time over {result['one']} alone (median of {args.rounds} paired "
        f"rounds; target <= {100 * TARGET_EXTRA:.0f}%: {'met' if result['within_target'] else 'NOT met'}); wrote {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
