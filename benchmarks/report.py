"""Render the results JSON of `python -m benchmarks.run` as markdown, the tables benchmarks/README.md quotes.

examples:
  python -m benchmarks.report benchmarks/results/cpu-2core/2026-12-02-paired-xeon-amx.json
  python -m benchmarks.report benchmarks/results/cpu-2core/2026-11-24.json > /tmp/suite.md

Other benchmarks (maps render, help start-up, robustness, the DINO dry run) write their own JSON shapes, described in
their sections of benchmarks/README.md: this renderer names them and stops.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from indexer.evaluation.document import CONFIDENCE


def _forward_table(rows: List[Dict]) -> List[str]:
    out = ["| model | px | batch | precision | channels_last | compile | images/s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ips = "failed" if r["images_per_s"] is None else f"{r['images_per_s']:.1f}"
        out.append(
            f"| {r['model']} | {r['size']} | {r['batch']} | {r['precision']} | {r['channels_last']} | "
            f"{r['compile']} | {ips} |"
        )
    return out


# ratio name -> (numerator, denominator): networks timed in the same rounds of `python -m benchmarks.run --only paired`
PAIRED_RATIOS: Dict[str, Tuple[str, str]] = {
    "fused_over_unfused": ("gresnet", "gresnet_unfused"),
    "fused_over_resnet50d": ("gresnet", "resnet50d"),
    "fused_over_resnet50d_silu": ("gresnet", "resnet50d_silu"),
    # GResNet's own architecture: what the fold saves, and what it still costs against no correction at all
    "fused_over_postnorm_twin": ("gresnet", "gresnet_postnorm"),
    "fused_over_naive_fold": ("gresnet", "gresnet_naive_fold"),
    "fused_over_mean_subtract": ("gresnet", "gresnet_mean_subtract"),
    # resnet50d's own geometry built from GResNet's layers: what fused split norm costs where the stem is not wider
    "splitnorm_r50d_over_resnet50d": ("resnet50d_splitnorm", "resnet50d"),
    "splitnorm_r50d_over_resnet50d_silu": ("resnet50d_splitnorm", "resnet50d_silu"),
    "splitnorm_r50d_over_naive_fold": ("resnet50d_splitnorm", "resnet50d_splitnorm_naive_fold"),
}


def ratio_key(ratio: str, precision: str) -> str:
    """The name a ratio has in a results file's target table: one per ratio and precision."""
    return f"{ratio}_{precision}"


def recorded_ratios(paired: Dict, precision: str) -> Dict[str, float]:
    """The ``PAIRED_RATIOS`` a results file's paired section holds for one precision (older files lack later ones)."""
    return {ratio: paired[precision][ratio] for ratio in PAIRED_RATIOS if ratio in paired[precision]}


def per_round_ratios(images_per_s: Dict[str, List[float]], ratio: str) -> List[float]:
    """A ``PAIRED_RATIOS`` ratio in each round: its numerator's throughput over its denominator's, same round."""
    numerator, denominator = PAIRED_RATIOS[ratio]
    return [a / b for a, b in zip(images_per_s[numerator], images_per_s[denominator])]


def paired_section(report: Dict) -> Optional[Dict]:
    """A results file's paired rounds: the CPU suite's ``paired`` section or the GPU benchmark's paired step; None
    where it has neither, or the GPU step was skipped or failed (its ``skipped`` or ``error`` says why)."""
    paired = report.get("paired") or (report.get("gpu") or {}).get("paired")
    return paired if paired and not ({"skipped", "error"} & set(paired)) else None


def paired_interval(paired: Dict, precision: str, ratio: str) -> Optional[Tuple[float, float]]:
    """The ``CONFIDENCE`` interval of a ratio's median over the paired rounds: distribution-free, from the order
    statistics of the per-round ratios (``scipy.stats.quantile_test``). None where the rounds are too few for that
    confidence (5 rounds reach 93.8%, 7 rounds 98.4%, 9 rounds 96.1%)."""
    from scipy.stats import quantile_test

    ips = paired[precision]["images_per_s"]
    if any(name not in ips for name in PAIRED_RATIOS[ratio]):
        return None
    low, high = quantile_test(per_round_ratios(ips, ratio), p=0.5).confidence_interval(CONFIDENCE)
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return round(float(low), 3), round(float(high), 3)


def paired_intervals(paired: Dict) -> Dict[str, Tuple[float, float]]:
    """``paired_interval`` of every recorded ratio, by its target-table name (``ratio_key``)."""
    out = {}
    for precision in ("fp32", "bf16"):
        for ratio in recorded_ratios(paired, precision):
            interval = paired_interval(paired, precision, ratio)
            if interval is not None:
                out[ratio_key(ratio, precision)] = interval
    return out


def _with_interval(value: Any, interval: Optional[Tuple[float, float]]) -> str:
    return f"{value}" if interval is None else f"{value} ({interval[0]}-{interval[1]})"


def _paired_table(paired: Dict, intervals: Dict[str, Tuple[float, float]], targets: Dict[str, Any]) -> List[str]:
    """The networks timed in the paired rounds (size in multiply-adds, every round), then the ratios between them."""
    gmacs = paired.get("gmacs_224", {})
    lines = [
        "",
        f"### Paired rounds: {paired['rounds']} interleaved rounds (eager, channels_last, "
        f"{paired['size']} px, batch {paired['batch']})",
        "",
        "| network | GMACs | fp32 img/s per round | bf16 img/s per round |",
        "|---|---|---|---|",
    ]
    for name in paired["fp32"]["images_per_s"]:
        rounds = {p: " / ".join(f"{v:.1f}" for v in paired[p]["images_per_s"][name]) for p in ("fp32", "bf16")}
        lines.append(f"| {name} | {gmacs.get(name, '')} | {rounds['fp32']} | {rounds['bf16']} |")
    lines += [
        "",
        f"Median of the per-round ratios ({CONFIDENCE:.0%} interval of the median in brackets, where the rounds "
        "allow one):",
        "",
        "| ratio | numerator / denominator | fp32 | bf16 |",
        "|---|---|---|---|",
    ]
    bf16 = recorded_ratios(paired, "bf16")
    for ratio, fp32 in recorded_ratios(paired, "fp32").items():
        numerator, denominator = PAIRED_RATIOS[ratio]
        fp32_cell, bf16_cell = (
            _with_interval(value, intervals.get(ratio_key(ratio, precision)))
            for precision, value in (("fp32", fp32), ("bf16", bf16[ratio]))
        )
        lines.append(f"| {ratio} | {numerator} / {denominator} | {fp32_cell} | {bf16_cell} |")
    stage_ms = paired.get("stage_ms_fp32")
    if stage_ms:
        parts = list(next(iter(stage_ms.values())))
        lines += [
            "",
            f"Where the time goes: median ms per fp32 batch of {paired['batch']} in each part (models interleaved):",
            "",
            "| network | " + " | ".join(parts) + " | sum |",
            "|---" * (len(parts) + 2) + "|",
        ]
        for name, per in stage_ms.items():
            cells = " | ".join(f"{per[p]:.1f}" for p in parts)
            lines.append(f"| {name} | {cells} | {sum(per.values()):.1f} |")
    lines += _op_tables(paired, targets)
    errors = paired.get("max_rel_err_vs_unfused_224")
    if errors:
        lines += [
            "",
            "Max relative error against the unfused model (final feature maps, borders included, 224 px): "
            + ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
            + ".",
        ]
    return lines


def _op_tables(paired: Dict, targets: Dict[str, Any]) -> List[str]:
    """Milliseconds by kind of operator under the profiler, and the ceilings the convolutions alone set."""
    op_ms = paired.get("op_ms")
    if not op_ms:
        return []
    kinds = list(next(iter(op_ms["fp32"].values())))
    lines = [
        "",
        f"What each kind of operator takes: median ms per batch of {paired['batch']} under torch.profiler (one "
        "profiled step per network and round, interleaved; 'total' is the step's wall time):",
        "",
        "| network | precision | " + " | ".join(kinds) + " |",
        "|---" * (len(kinds) + 2) + "|",
    ]
    for precision, per_model in op_ms.items():
        for name, per in per_model.items():
            lines.append(f"| {name} | {precision} | " + " | ".join(f"{per[k]:.1f}" for k in kinds) + " |")
    ceilings = paired.get("conv_ceiling", {})
    if ceilings:
        lines += [
            "",
            "The most each ratio could be if everything in fused GResNet but its convolutions cost nothing "
            "(the reference's total over GResNet's convolution time):",
            "",
            "| ratio | measured (median of rounds) | ceiling | target |",
            "|---|---|---|---|",
        ]
        for precision, per_ratio in ceilings.items():
            for ratio, ceiling in per_ratio.items():
                key = ratio_key(ratio, precision)
                target = targets.get(key)
                lines.append(
                    f"| {key} | {paired[precision].get(ratio, '')} | {ceiling} | {'' if target is None else target} |"
                )
    return lines


def _gpu_lines(gpu: Dict) -> List[str]:
    """The GPU run's section: its budget, forward table, what was skipped or failed, nvJPEG agreement."""
    lines = [
        "",
        f"### GPU (budget {gpu['budget_s']:.0f} s, {gpu['budget_left_s']:.0f} s left at the end)",
        "",
        *(
            ["fp32 convolutions ran in TF32 (cuDNN's default), in every network alike.", ""]
            if gpu.get("cudnn_allow_tf32")
            else []
        ),
        "Forward, synthetic batch in memory, **random init** (speed only):",
        "",
    ]
    lines += _forward_table(gpu["forward"])
    for r in gpu["forward"]:
        if r.get("skipped") or r.get("error"):
            lines.append(f"\n{r['model']} compile={r['compile']}: {r.get('skipped') or r.get('error')}")
    gpu_paired = gpu.get("paired") or {}
    if gpu_paired.get("skipped") or gpu_paired.get("error"):
        outcome = f"skipped, {gpu_paired['skipped']}" if gpu_paired.get("skipped") else f"failed, {gpu_paired['error']}"
        lines += ["", f"Paired rounds: {outcome}"]
    e2e_gpu = gpu["e2e"]
    if e2e_gpu.get("skipped"):
        lines += ["", f"e2e: skipped, {e2e_gpu['skipped']}"]
    for r in e2e_gpu.get("rows", []):
        if "e2e_images_per_s" not in r:
            lines.append(f"\ne2e {r['files']} decode={r['decode']}: {r.get('skipped') or r.get('error')}")
    if e2e_gpu.get("agreement"):
        lines += [
            "",
            "nvJPEG (`--decode device`) vs PIL in the workers (`--decode workers`), same images, per-image cosine:",
            "",
            "| model | files | images | mean | 1st percentile | min |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {a['model']} | {a['files']} | {a['images']} | {a['cosine_mean']} | {a['cosine_p1']} | "
            f"{a['cosine_min']} |"
            for a in e2e_gpu["agreement"]
        ]
    return lines


def render(report: Dict) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m.get('gpu') or m['cpu']}, {m['cores']} cores, torch {m['torch']}, timm {m['timm']} "
        f"({report['date']}{', quick' if report.get('quick') else ''})",
        "",
    ]
    paired = paired_section(report)
    intervals = paired_intervals(paired) if paired else {}
    lines += ["### Targets", ""]
    if intervals:
        lines += [
            f"A paired ratio is the median of its rounds, its {CONFIDENCE:.0%} interval in brackets; 'within noise' "
            "where that interval holds the target.",
            "",
        ]
    lines += ["| ratio / figure | measured | target | met |", "|---|---|---|---|"]
    for k, v in report.get("ratios", {}).items():
        met = {True: "yes", False: "**no**", None: ""}[v["met"]]
        interval, target = intervals.get(k), v["target"]
        if interval is not None and isinstance(target, (int, float)) and interval[0] < target <= interval[1]:
            met += " (within noise)"
        lines.append(
            f"| {k} | {_with_interval(v['measured'], interval)} | {'' if target is None else target} | {met} |"
        )
    if report.get("forward"):
        lines += ["", "### Model forward (synthetic batch in memory)", ""] + _forward_table(report["forward"])
    if paired:
        lines += _paired_table(paired, intervals, {k: v.get("target") for k, v in report.get("ratios", {}).items()})
        if paired.get("load_avg_start"):
            lines += [
                "",
                f"Load average (1, 5, 15 min) at the start: {paired['load_avg_start']}, at the end: "
                f"{paired['load_avg_end']}.",
            ]
    gpu = report.get("gpu")
    if gpu:
        lines += _gpu_lines(gpu)
    e2e = [r for r in report.get("e2e", []) or (gpu or {}).get("e2e", {}).get("rows", []) if "e2e_images_per_s" in r]
    if e2e:
        lines += [
            "",
            "### End-to-end extraction from JPEG vs bare forward (same run, same settings)",
            "",
            "| model | files | images | batch | decode | workers | precision | e2e img/s | bare img/s | efficiency |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in e2e:
            lines.append(
                f"| {r['model']} | {r.get('files', 'tiny-imagenet 64px')} | {r['images']} | {r['batch']} | "
                f"{r.get('decode', 'workers')} | "
                f"{r['workers']} | {r['precision']} | "
                f"{r['e2e_images_per_s']} | {r['bare_forward_images_per_s']} | {r['pipeline_efficiency']} |"
            )
    mil = report.get("milvus")
    if mil:
        lines += [
            "",
            "### Milvus insert (upsert + flush)",
            "",
            "| backend | dim | rows | rows/s |",
            "|---|---|---|---|",
        ]
        lines += [f"| {r['backend']} | {r['dim']} | {r['rows']} | {r['rows_per_s']} |" for r in mil["insert"]]
        lines += [
            "",
            "### Milvus search, nq = 1, k = 10, FLAT/L2",
            "",
            "| backend | rows | dim | p50 ms | p99 ms |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['backend']} | {r['rows']} | {r['dim']} | {r['p50_ms']} | {r['p99_ms']} |" for r in mil["search"]
        ]
        if mil.get("server_skipped"):
            lines.append(f"\nServer: {mil['server_skipped']}")
    ev = report.get("evaluation")
    if ev:
        lines += [
            "",
            "### Evaluation: exact (chunked matmul) vs naive (one Milvus Lite search per query)",
            "",
            f"{ev['rows']} x {ev['dim']}: exact {ev['exact_seconds']} s; naive {ev['naive_seconds_measured']} s "
            f"for {ev['naive_queries_run']} queries ({ev['naive_seconds_for_all']} s for all"
            f"{', extrapolated' if ev['naive_extrapolated'] else ''}); exact is **{ev['exact_over_naive']}x** "
            f"faster. P@1 on the naive queries: exact {ev['p1_exact_on_naive_queries']:.4f}, "
            f"naive {ev['p1_naive']:.4f}.",
        ]
    if report.get("scale"):
        lines += [""] + _scale_tables(report["scale"])
    return "\n".join(lines)


def _scale_tables(sc: Dict) -> List[str]:
    dims = ", ".join(f"{m} {d}" for m, d in sc["dims"].items())
    lines = [
        f"### Scale: {sc['rows']:,} rows per collection ({dims} dims), {sc['vectors']}",
        "",
        "| backend | app query p50 / p95 ms (concurrent) | sequential p50 / p95 ms | upload p50 ms (concurrent) | "
        "sequential p50 ms | evaluate s | evaluate peak RSS MiB | insert rows/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, b in sc["backends"].items():
        lines.append(
            f"| {name} | {b.get('app_query_ms_p50')} / {b.get('app_query_ms_p95')} | "
            f"{b.get('app_query_sequential_ms_p50')} / {b.get('app_query_sequential_ms_p95')} | "
            f"{b.get('upload_query_ms_p50')} | {b.get('upload_query_sequential_ms_p50')} | "
            f"{b.get('evaluate_s', b.get('failed', ''))} | {b.get('evaluate_peak_rss_mib', '')} | "
            f"{b.get('insert_rows_per_s')} |"
        )
    lines += [
        "",
        "nq = 1 search, k = 9, p50 ms by rows (Lite: in-process; server: Bounded consistency unless marked)",
        "",
        "| backend | model | dim | " + " | ".join(f"{r:,}" for r in _curve_rows(sc)) + " |",
        "|---|---|---|" + "---|" * len(_curve_rows(sc)),
    ]
    for name, b in sc["backends"].items():
        for model in sc["models"]:
            pts = {
                r["rows"]: r["p50_ms"]
                for r in b.get("search_curve", [])
                if r["model"] == model and r["consistency"] != "Strong"
            }
            lines.append(
                f"| {name} | {model} | {sc['dims'][model]} | "
                + " | ".join(str(pts.get(r, "")) for r in _curve_rows(sc))
                + " |"
            )
        for r in [r for r in b.get("search_curve", []) if r["consistency"] == "Strong"]:
            lines.append(
                f"| {name}, Strong | {r['model']} | {r['dim']} | "
                + " | ".join(str(r["p50_ms"]) if x == r["rows"] else "" for x in _curve_rows(sc))
                + " |"
            )
    slow = sc.get("lite_slow", {})
    if slow.get("rows"):
        lines += [
            "",
            f"Milvus Lite's nq=1 p50 passes {slow['ms']} ms at about **{slow['rows']:,} rows** of "
            f"{slow['dim']} dims in this run (the size past which `indexer build` recommends a server is "
            f"the constant in indexer/lite_advice.py).",
        ]
    return lines


def _curve_rows(sc: Dict) -> List[int]:
    return sorted({r["rows"] for b in sc["backends"].values() for r in b.get("search_curve", [])})


def suite_result_problem(report: Any) -> Optional[str]:
    """Why a parsed JSON is not a `python -m benchmarks.run` result ``render`` can read, or None where it is one."""
    if not isinstance(report, dict):
        return "it holds no JSON object"
    if "settings" in report and "machine" in report:
        return None
    origin = f"the {report['benchmark']!r} benchmark" if "benchmark" in report else "another benchmark script"
    return f"it is a result of {origin}, not of python -m benchmarks.run; benchmarks/README.md describes it"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("results", type=Path, help="a results JSON that python -m benchmarks.run wrote")
    args = p.parse_args(argv)
    try:
        report = json.loads(args.results.read_text())
    except (OSError, ValueError) as e:
        p.error(f"cannot read {args.results}: {e}")
    problem = suite_result_problem(report)
    if problem:
        p.error(f"{args.results}: {problem}")
    sys.stdout.write(render(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
