"""Benchmark suite: forward throughput, end-to-end extraction, Milvus insert/search, evaluation.

python -m benchmarks.run [--device auto|cpu|cuda] [--quick] [--only SECTIONS] [--out benchmarks/results/<machine>/<date>.json]
python -m benchmarks.run --only paired    # interleaved GResNet / resnet50d rounds (the fusion targets)
python -m benchmarks.run --only scale     # 50,000-row collections, Milvus Lite vs the embedded server
python -m benchmarks.run --device cuda    # the GPU benchmark (benchmarks/gpu.py), under 8 minutes on one GPU
python -m benchmarks.run --smoke --only forward,paired,e2e,milvus,evaluation,scale --out /tmp/smoke.json
                                          # every section still runs (smallest sizes; what the tests run)

Every comparison is measured within one run and reported as a ratio next to the absolute figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from benchmarks import REPO, benchmark_settings, cpu_model
from benchmarks.forward import PRECISIONS, TINY, imagenet_sized_copy, seeded_model, time_forward
from benchmarks.paired import SMOKE_PAIRED_NETWORKS, bench_paired
from benchmarks.report import paired_section, ratio_key, recorded_ratios
from embed.common.settings import RetrievalSettings

log = logging.getLogger("benchmarks")


# fused GResNet against timm's resnet50d, plain and with SiLU (the activation GResNet has): issue 24. The same
# targets on any device, CPU suite or GPU benchmark (paired ratios are named by benchmarks.report.ratio_key)
PAIRED_TARGETS: Dict[str, float] = {
    "fused_over_unfused_fp32": 1.3,
    "fused_over_resnet50d_fp32": 0.95,
    "fused_over_resnet50d_bf16": 0.95,
    "fused_over_resnet50d_silu_fp32": 1.0,
    "fused_over_resnet50d_silu_bf16": 1.0,
    # the same architecture with ordinary (unfused) batch norm, and with a fold that skips the borders
    "fused_over_postnorm_twin_fp32": 1.0,
    "fused_over_postnorm_twin_bf16": 1.0,
    "fused_over_naive_fold_fp32": 0.95,
    "fused_over_naive_fold_bf16": 0.95,
}
TARGETS: Dict[str, Dict[str, float]] = {
    "cpu": {
        **PAIRED_TARGETS,
        "e2e_over_bare": 0.8,
        "exact_over_naive_eval": 50.0,
    },
    "cuda": {
        **PAIRED_TARGETS,
        "gresnet_fused_bf16_224_b256": 15000,
        "convnext_bf16_224_b256": 13000,
        "vit_bf16_224_b256": 19000,
        "e2e_images_per_s": 5000,
    },
}


DEFAULT_SECTIONS = "forward,paired,e2e,milvus,evaluation"
GPU_SECTIONS = "gpu"  # what --device cuda runs unless --only says otherwise
# the lowest per-image cosine between nvJPEG- and PIL-decoded vectors, by set of files
E2E_COSINE_KEYS = {
    "tiny-imagenet 64px": "decode_cosine_min_tiny_imagenet",
    "500x375 re-encoded": "decode_cosine_min_500x375",
}


def machine_info(device: torch.device) -> Dict:
    import timm

    info = {
        "hostname_hash": str(abs(hash(socket.gethostname())) % 10**6),
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def machine_tag(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "-").lower()
    return f"cpu-{machine_info(device)['cores']}core"


# 1. forward ---------------------------------------------------------------------------------------


def bench_forward(device: torch.device, quick: bool, smoke: bool = False) -> List[Dict]:
    gpu = device.type == "cuda"
    quick = quick or smoke
    batch = 1 if smoke else 256 if gpu else 16
    min_s = 0.0 if smoke else 3.0 if gpu else (2.0 if quick else 4.0)
    precisions = dict(PRECISIONS)
    if gpu:
        precisions["fp16"] = torch.float16
    if quick and not gpu:
        precisions = {"fp32": None}
    compiles = [False] if (quick or not gpu) else [False, True]
    rows = []
    cases = [
        ("gresnet", True, 224),
        ("gresnet", False, 224),
        ("resnet50d", True, 224),
        ("gresnet", True, 176),
        ("convnext", True, 224),
        ("vit", True, 224),
        ("effnet-lite0", True, 224),
    ]
    if smoke:  # the networks of the ratios
        cases = cases[:3]
    for name, fused, size in cases:
        model = seeded_model(name, fused)
        for pname, prec in precisions.items():
            for cl in (True, False):
                if name == "vit" and cl:
                    continue  # channels_last only changes the patch-embedding conv
                # on CPU, compiling every model costs minutes each: compile the two ResNets being compared
                model_compiles = (
                    compiles
                    if gpu or quick
                    else ([False, True] if name in ("gresnet", "resnet50d") and fused and cl else [False])
                )
                for comp in model_compiles:
                    try:
                        ips = time_forward(model, batch, size, device, prec, cl, comp, min_s)
                    except Exception as e:  # an unsupported combination is reported, not fatal
                        log.warning("%s %s failed: %s", name, pname, e)
                        ips = None
                    row = {
                        "model": name + ("" if fused or name != "gresnet" else "_unfused"),
                        "size": size,
                        "batch": batch,
                        "precision": pname,
                        "channels_last": cl,
                        "compile": comp,
                        "images_per_s": None if ips is None else round(ips, 2),
                    }
                    log.info("forward %s", row)
                    rows.append(row)
        del model
    return rows


def best(rows: List[Dict], **match) -> Optional[Dict]:
    cand = [r for r in rows if all(r.get(k) == v for k, v in match.items()) and r.get("images_per_s")]
    return max(cand, key=lambda r: r["images_per_s"]) if cand else None


# 2. end-to-end extraction -----------------------------------------------------------------------


def bench_e2e(device: torch.device, quick: bool, config: RetrievalSettings, smoke: bool = False) -> List[Dict]:
    from embed.extraction.embedder import build_embedder, default_workers
    from embed.extraction.extract import ExtractConfig, extract

    if not (TINY / "val" / "val_annotations.txt").is_file():
        return [{"skipped": f"no Tiny-ImageNet at {TINY}"}]
    rows = []
    gpu = device.type == "cuda"
    quick = quick or smoke
    n = 16 if smoke else 512 if quick else (10000 if gpu else 1024)
    with tempfile.TemporaryDirectory() as data_tmp:
        datasets = [("tiny-imagenet 64px", TINY)]
        if not quick:
            datasets.append(("500x375 re-encoded", imagenet_sized_copy(TINY, n, Path(data_tmp) / "big")))
        for model in ["effnet-lite0"] if quick else ["effnet-lite0", "gresnet"]:
            emb = build_embedder(model, random_init=True, device=str(device), settings=config)
            batch = 8 if smoke else 256 if gpu else 32
            iters = 1 if smoke else 20 if gpu else 5
            fwd = emb.time_forward(batch, emb.loaded.data_config["input_size"][-1], iters=iters)
            # workers: PIL decode in DataLoader processes (the default); device: JPEG batches decoded on the
            # model's device (nvJPEG on a GPU; on a CPU, in the main process)
            for files, data_root in datasets:
                for decode in ("workers", "device"):
                    with tempfile.TemporaryDirectory() as tmp:
                        cfg = ExtractConfig(
                            model=model,
                            split="val",
                            data_root=data_root,
                            out=Path(tmp),
                            limit=n,
                            batch_size=batch,
                            device=str(device),
                            random_init=True,
                            progress=False,
                            shard_size=10**6,
                            decode=decode,
                            settings=config,
                        )
                        result = extract(cfg, embedder=emb)
                    rows.append(
                        {
                            "model": model,
                            "files": files,
                            "images": result.n_computed,
                            "batch": batch,
                            "decode": decode,
                            "workers": default_workers(device),
                            "precision": emb.precision_name,
                            "channels_last": emb.channels_last,
                            "e2e_images_per_s": round(result.images_per_s, 2),
                            "bare_forward_images_per_s": round(fwd, 2),
                            "pipeline_efficiency": round(result.images_per_s / fwd, 3),
                        }
                    )
                    log.info("e2e %s", rows[-1])
    return rows


# 3. Milvus ----------------------------------------------------------------------------------------


def bench_milvus(quick: bool, config: RetrievalSettings, smoke: bool = False) -> Dict:
    from benchmarks.synthetic import synthetic_meta
    from indexer.milvus_store import VectorStore

    out: Dict = {"insert": [], "search": []}
    tmp = Path(tempfile.mkdtemp(prefix="bench_milvus_"))
    backends = {"lite": str(tmp / "bench.db")}
    server = None
    if smoke:
        out["server_skipped"] = "not started by --smoke (minutes on a loaded machine)"
    else:
        try:
            from benchmarks.milvus_server import start_embedded_milvus

            server = start_embedded_milvus(tmp / "server")
            backends["server"] = f"http://127.0.0.1:{server.listen_port}"
        except Exception as e:
            out["server_skipped"] = f"embedded Milvus server unavailable: {e}"
    rng = np.random.default_rng(0)
    block = 500 if smoke else 10000  # rows per insert of the search collection
    try:
        for backend, uri in backends.items():
            store = VectorStore(uri, settings=config)
            n_insert = 200 if smoke else 5000 if quick else 10000
            for dim in (384, 768, 2048):
                name = f"bench_insert_{dim}"
                store.drop(name)
                store.ensure_collection(name, synthetic_meta("bench", dim, "bench", "/"))
                vecs = rng.normal(size=(n_insert, dim)).astype(np.float32)
                t = time.perf_counter()
                store.upsert(
                    name,
                    np.arange(n_insert),
                    vecs,
                    ["c"] * n_insert,
                    [f"p{i}" for i in range(n_insert)],
                    progress=False,
                )
                store.flush(name)
                secs = time.perf_counter() - t
                out["insert"].append(
                    {"backend": backend, "dim": dim, "rows": n_insert, "rows_per_s": round(n_insert / secs, 1)}
                )
                log.info("insert %s", out["insert"][-1])
                store.drop(name)
            dim = 2048
            for n in (1000,) if smoke else (10000,) if quick else (10000, 50000):
                name = f"bench_search_{n}"
                store.drop(name)
                store.ensure_collection(name, synthetic_meta("bench", dim, "bench", "/"))
                for start in range(0, n, block):
                    vecs = rng.normal(size=(min(block, n - start), dim)).astype(np.float32)
                    store.upsert(
                        name,
                        np.arange(start, start + len(vecs)),
                        vecs,
                        ["c"] * len(vecs),
                        ["p"] * len(vecs),
                        progress=False,
                    )
                store.flush(name)
                store.count(name)
                queries = rng.normal(size=(8 if smoke else 60 if quick else 200, dim)).astype(np.float32)
                lat = []
                for i, q in enumerate(queries):
                    t = time.perf_counter()
                    store.search(name, q[None], k=10, n_rows=n)
                    if i >= 5:
                        lat.append((time.perf_counter() - t) * 1000)
                out["search"].append(
                    {
                        "backend": backend,
                        "rows": n,
                        "dim": dim,
                        "nq": 1,
                        "k": 10,
                        "p50_ms": round(statistics.median(lat), 2),
                        "p99_ms": round(float(np.percentile(lat, 99)), 2),
                        "samples": len(lat),
                    }
                )
                log.info("search %s", out["search"][-1])
                store.drop(name)
            store.close()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def bench_evaluation(quick: bool, device: torch.device, config: RetrievalSettings, smoke: bool = False) -> Dict:
    """Exact chunked evaluation vs a naive one that sends one Milvus Lite search per query."""
    from benchmarks.synthetic import synthetic_meta
    from indexer.evaluation.evaluate import naive_search
    from indexer.evaluation.exact import ExactSearch
    from indexer.evaluation.metrics import encode_labels, needed_k, retrieval_metrics
    from indexer.milvus_store import VectorStore

    n, dim = (600, 64) if smoke else (10000, 2048)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 200, n)
    centers = rng.normal(size=(200, dim)).astype(np.float32)
    vecs = (centers[labels] + rng.normal(scale=3.0, size=(n, dim))).astype(np.float32)
    codes = encode_labels(labels)
    ks = (1, 5, 10, 20, 100)
    t = time.perf_counter()
    neigh = ExactSearch(vecs).leave_one_out(needed_k(codes, ks, 20), device=str(device))
    exact_m = retrieval_metrics(neigh, codes, ks)
    exact_s = time.perf_counter() - t

    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    try:
        store = VectorStore(str(tmp / "eval.db"), settings=config)
        store.ensure_collection("bench_eval", synthetic_meta("bench", dim, "bench", "/"))
        store.upsert("bench_eval", np.arange(n), vecs, [str(c) for c in labels], ["p"] * n, progress=False)
        store.flush("bench_eval")
        store.count("bench_eval")
        n_naive = 20 if smoke else 300 if quick else n
        k = needed_k(codes, ks, 20)
        naive_hits, naive_s = naive_search(store, "bench_eval", vecs, np.arange(n), k, n_naive)
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # the naive lists must give the same precision@1 on the queries it ran
    naive_p1 = float(np.mean([labels[h[0]["id"]] == labels[i] for i, h in enumerate(naive_hits)]))
    exact_p1 = float(np.mean(codes[neigh.index[:n_naive, 0]] == codes[:n_naive]))
    naive_full = naive_s * n / n_naive
    return {
        "rows": n,
        "dim": dim,
        "exact_seconds": round(exact_s, 2),
        "naive_queries_run": n_naive,
        "naive_seconds_measured": round(naive_s, 2),
        "naive_seconds_for_all": round(naive_full, 1),
        "naive_extrapolated": n_naive < n,
        "exact_over_naive": round(naive_full / exact_s, 1),
        "p1_exact_on_naive_queries": exact_p1,
        "p1_naive": naive_p1,
        "exact_precision_at_1": exact_m.precision["1"],
    }


# report -----------------------------------------------------------------------------------------


def _cpu_ratios(report: Dict, device: torch.device) -> Dict:
    """The CPU suite's ratios: like for like between the networks, compiled over eager, e2e over bare, exact over naive."""
    fw = report.get("forward", [])
    out = {}

    # like for like: same precision, eager; each model at its best memory layout
    def ratio(a: Dict, b: Dict) -> Optional[float]:
        ra, rb = best(fw, **a), best(fw, **b)
        return round(ra["images_per_s"] / rb["images_per_s"], 3) if ra and rb else None

    eager = dict(size=224, compile=False)
    # single best figures; the paired rounds' medians replace them when present
    for prec in ("fp32", "bf16"):
        for ratio_name, reference in (
            ("fused_over_unfused", "gresnet_unfused"),
            ("fused_over_resnet50d", "resnet50d"),
        ):
            value = ratio(
                {**eager, "model": "gresnet", "precision": prec}, {**eager, "model": reference, "precision": prec}
            )
            if value is not None:
                out[ratio_key(ratio_name, prec)] = value
    for prec in ("fp32", "bf16"):
        compiled = ratio(
            {"model": "gresnet", "size": 224, "precision": prec, "compile": True},
            {"model": "resnet50d", "size": 224, "precision": prec, "compile": True},
        )
        if compiled is not None:
            out[ratio_key("fused_over_resnet50d_both_compiled", prec)] = compiled
        gain = ratio(
            {"model": "gresnet", "size": 224, "precision": prec, "compile": True},
            {"model": "gresnet", "size": 224, "precision": prec, "compile": False},
        )
        if gain is not None:
            out[ratio_key("gresnet_compiled_over_eager", prec)] = gain
    # the target is about the default pipeline (auto decode) on the shared data; the table lists every configuration
    from embed.extraction.device_decode import resolve_decode

    default = resolve_decode("auto", device)
    e2e = [
        r
        for r in report.get("e2e", [])
        if "pipeline_efficiency" in r
        and r.get("files", "tiny-imagenet 64px") == "tiny-imagenet 64px"
        and r.get("decode", default) == default
    ]
    if e2e:
        out["e2e_over_bare"] = min(r["pipeline_efficiency"] for r in e2e)
    if "evaluation" in report:
        out["exact_over_naive_eval"] = report["evaluation"]["exact_over_naive"]
    return out


def ratios(report: Dict, device: torch.device) -> Dict:
    fw = report.get("forward", [])
    out = {}
    if device.type == "cpu":
        out.update(_cpu_ratios(report, device))
    else:
        gpu = report.get("gpu", {})
        fw = fw or gpu.get("forward", [])
        for name, key in (
            ("gresnet", "gresnet_fused_bf16_224_b256"),
            ("convnext", "convnext_bf16_224_b256"),
            ("vit", "vit_bf16_224_b256"),
        ):
            b = best(fw, model=name, size=224, precision="bf16")
            if b:
                out[key] = b["images_per_s"]
        e2e = [r for r in report.get("e2e", []) or gpu.get("e2e", {}).get("rows", []) if "e2e_images_per_s" in r]
        if e2e:
            out["e2e_images_per_s"] = max(r["e2e_images_per_s"] for r in e2e)
        for agreement in gpu.get("e2e", {}).get("agreement", []):
            out[E2E_COSINE_KEYS[agreement["files"]]] = agreement["cosine_min"]
    # the paired rounds' medians, on either device (on a CPU they replace the single best figures above)
    paired = paired_section(report)
    if paired:
        for prec in PRECISIONS:
            for ratio_name, value in recorded_ratios(paired, prec).items():
                out[ratio_key(ratio_name, prec)] = value
    targets = TARGETS["cuda" if device.type == "cuda" else "cpu"]
    result: Dict[str, Dict[str, Any]] = {
        k: {"measured": v, "target": targets.get(k), "met": (v >= targets[k]) if k in targets else None}
        for k, v in out.items()
    }
    scale = report.get("scale")
    if scale:  # ceilings: lower is better
        for key, ceiling in scale["targets"].items():
            v = scale.get(key)
            result[f"scale_{key}"] = {
                "measured": v,
                "target": f"<= {ceiling}",
                "met": None if v is None else v <= ceiling,
            }
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--quick", action="store_true", help="smaller grid and samples (a few minutes on CPU)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="every asked section at its smallest sizes, batch 1 and no Milvus server (seconds; the figures mean "
        "nothing): checks that the benchmark still runs, as tests/test_benchmarks_run.py does",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="JSON path (default benchmarks/results/<machine>/<date>.json)"
    )
    p.add_argument(
        "--only",
        default=None,
        help=f"comma-separated sections (default {DEFAULT_SECTIONS}; with --device cuda: {GPU_SECTIONS}, "
        f"the GPU benchmark of benchmarks/gpu.py); 'scale' (50,000-row collections on Milvus "
        f"Lite and the embedded server, ~15 min on 2 cores) runs only when named",
    )
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the paired section (default 5)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from embed.common.logs import quiet_third_party_logs

    quiet_third_party_logs()
    for ours in ("embed", "indexer"):  # the benchmark prints its own lines
        logging.getLogger(ours).setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else (args.device if args.device != "auto" else "cpu")
    )
    if device.type == "cuda":
        from benchmarks.gpu import NoCuda, require_cuda

        try:
            require_cuda()
        except NoCuda as e:
            log.error("%s", e)
            return 2
    from embed.extraction import host_memory
    from embed.extraction.embedder import resolve_device

    config = benchmark_settings()
    device = resolve_device(str(device))  # as every model run does: on a CPU, freed host memory kept for reuse
    sections = set((args.only or (GPU_SECTIONS if device.type == "cuda" else DEFAULT_SECTIONS)).split(","))
    report: Dict = {
        "machine": machine_info(device),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "smoke": args.smoke,
        "settings": {"cpu_batch": 16, "gpu_batch": 256, "host_memory": host_memory.describe()},
    }
    t0 = time.perf_counter()
    if "forward" in sections:
        report["forward"] = bench_forward(device, args.quick, args.smoke)
    if "paired" in sections:
        report["paired"] = (
            bench_paired(device, True, networks=SMOKE_PAIRED_NETWORKS, min_seconds=0.0, batch=1)
            if args.smoke
            else bench_paired(device, args.quick, args.rounds)
        )
    if "e2e" in sections:
        report["e2e"] = bench_e2e(device, args.quick, config, args.smoke)
    if "milvus" in sections:
        report["milvus"] = bench_milvus(args.quick, config, args.smoke)
    if "evaluation" in sections:
        report["evaluation"] = bench_evaluation(args.quick, device, config, args.smoke)
    if "gpu" in sections:
        from benchmarks.gpu import bench_gpu

        report["gpu"] = bench_gpu(device, TINY, config, args.quick)
    if "scale" in sections:
        from benchmarks.scale import SMOKE, bench_scale

        report["scale"] = bench_scale(args.quick, SMOKE if args.smoke else None, config)
    report["ratios"] = ratios(report, device)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    # a run of other sections than the default ones gets its own file: it must not replace the day's full run
    suffix = "" if sections == set(DEFAULT_SECTIONS.split(",")) else "-" + "-".join(sorted(sections))
    out = (
        args.out
        or REPO / "benchmarks" / "results" / machine_tag(device) / f"{dt.date.today().isoformat()}{suffix}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["ratios"], indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
