"""ImageNet-sized collections: insert rate, Lite search time vs rows, the app's three-column query, evaluation memory.

Part of ``python -m benchmarks.run --only scale``. Three collections (the blog's models: gresnet 2048-d,
convnext 768-d, vit 384-d) of ``rows`` SYNTHETIC vectors each (50 per class, like ImageNet val) are built on
Milvus Lite and on the embedded Milvus server in the same run. Timings only: the vectors mean nothing.

    python -m benchmarks.scale --evaluate URI --dataset NAME --models gresnet,convnext,vit

is the evaluation child: it runs the exact leave-one-out evaluation in its own process and prints its time and
peak RSS as JSON, so that the memory figure is the evaluation's alone.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks import benchmark_settings
from embed.common.cli_args import model_list
from embed.common.settings import RetrievalSettings
from embed.models.catalog import BLOG_MODELS

log = logging.getLogger("benchmarks")
REPO = Path(__file__).resolve().parents[1]
DATASET = "synthetic-imagenet-val"
SPLIT = "val"
VECTORS_NOTE = "synthetic vectors (Gaussian class clusters): search and evaluation timings only, not retrieval quality"
TARGET_APP_QUERY_MS_P50 = 300
TARGET_EVALUATE_PEAK_MIB = 4096
LITE_SLOW_MS = 100  # a third of the app's budget: one column's search past this makes three columns too slow


@dataclass
class ScaleConfig:
    rows: int = 50_000
    models: Sequence[str] = BLOG_MODELS
    classes: int = 1000
    step: int = 10_000  # rows inserted between two points of the search-time curve
    curve_queries: int = 20  # nq=1 searches per curve point
    app_queries: int = 40
    upload_queries: int = 8
    k: int = 9  # the app's default top k
    evaluate: bool = True
    eval_features: Sequence[str] = ("raw",)  # the vectors as stored; `indexer evaluate` adds "normalized" by default
    server: bool = True  # also on the embedded Milvus server (minutes to start on a loaded machine)
    seed: int = 0


QUICK = ScaleConfig(rows=6_000, classes=120, step=2_000, curve_queries=5, app_queries=8, upload_queries=2)
# `benchmarks.run --smoke`: every step once, on Milvus Lite only, with the two lightest query models
SMOKE = ScaleConfig(
    rows=200,
    models=("effnet-lite0", "vit"),
    classes=20,
    step=100,
    curve_queries=1,
    app_queries=2,
    upload_queries=1,
    server=False,
)


def percentile(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


def synthetic_vectors(rng: np.random.Generator, labels: np.ndarray, classes: int, dim: int) -> np.ndarray:
    """Gaussian clusters, one per class, so that the evaluation has neighbours of the same class to find."""
    centers = rng.normal(size=(classes, dim)).astype(np.float32)
    noise = rng.normal(scale=2.0, size=(len(labels), dim)).astype(np.float32)
    noise += centers[labels]
    return noise


def synthetic_upload(seed: int) -> bytes:
    """A 500x375 JPEG (ImageNet's typical size) of smooth noise, as a user would upload."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(15, 20, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((500, 375), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def collection_meta(model: str, data_root: str, config: RetrievalSettings):
    """The rows' identity as the app's query embedder will make it (seeded random weights where no real ones load), its
    precision and transform, so that an upload is embedded and searched (the vectors themselves are synthetic)."""
    from benchmarks.synthetic import synthetic_meta
    from embed.extraction.embedder import build_embedder
    from embed.models.catalog import REGISTRY

    spec = REGISTRY[model]
    embedder = build_embedder(model, random_init=True, settings=config)
    return synthetic_meta(
        model,
        spec.dim,
        DATASET,
        data_root,
        SPLIT,
        timm_name=spec.timm_name,
        weights_source=embedder.loaded.weights.source,
        weights_fingerprint=embedder.loaded.weights.fingerprint,
        precision=embedder.precision_name,
        transform=repr(embedder.loaded.transform),
    )


def synthetic_relpath(row: int) -> str:
    """The file a synthetic row stands for: no such file exists, but the app matches a clicked image by it."""
    return f"synthetic/{row:07d}.JPEG"


# building, with the search-time curve ---------------------------------------------------------------


def build_collections(
    uri: str, cfg: ScaleConfig, data_root: str, labels: np.ndarray, config: RetrievalSettings
) -> Dict:
    """Insert ``rows`` vectors per model in steps; after each step, time nq=1 searches at that size."""
    from embed.common.identity import EmbeddingKey
    from indexer.milvus_store import VectorStore

    store = VectorStore(uri, settings=config)
    consistency = None if store.is_lite else "Bounded"
    rng = np.random.default_rng(cfg.seed)
    class_ids = [f"c{c:04d}" for c in labels]
    relpaths = [synthetic_relpath(i) for i in range(cfg.rows)]
    insert, curve = [], []
    for model in cfg.models:
        meta = collection_meta(model, data_root, config)
        name = EmbeddingKey(model, DATASET, SPLIT).collection_name
        store.ensure_collection(name, meta, recreate=True)
        vectors = synthetic_vectors(rng, labels, cfg.classes, meta.dim)
        seconds = 0.0
        for start in range(0, cfg.rows, cfg.step):
            stop = min(start + cfg.step, cfg.rows)
            t = time.perf_counter()
            store.upsert(
                name,
                np.arange(start, stop),
                vectors[start:stop],
                class_ids[start:stop],
                relpaths[start:stop],
                progress=False,
            )
            store.flush(name)
            seconds += time.perf_counter() - t
            store.count(name)  # Strong: the search below sees every row
            queries = rng.normal(size=(cfg.curve_queries + 2, meta.dim)).astype(np.float32)
            lat = []
            for i, q in enumerate(queries):
                t = time.perf_counter()
                store.search(name, q[None], k=cfg.k, n_rows=stop, consistency=consistency)
                if i >= 2:  # the first searches after an insert rebuild Lite's caches
                    lat.append((time.perf_counter() - t) * 1000)
            curve.append(
                {
                    "model": model,
                    "dim": meta.dim,
                    "rows": stop,
                    "nq": 1,
                    "k": cfg.k,
                    "consistency": consistency or "none (Lite)",
                    "p50_ms": percentile(lat, 50),
                    "p95_ms": percentile(lat, 95),
                }
            )
            log.info("scale search %s", curve[-1])
        meta.rows, meta.complete = cfg.rows, True
        store.set_meta(name, meta)
        insert.append(
            {
                "model": model,
                "dim": meta.dim,
                "rows": cfg.rows,
                "seconds": round(seconds, 2),
                "rows_per_s": round(cfg.rows / seconds, 1),
            }
        )
        log.info("scale insert %s", insert[-1])
        del vectors
    if not store.is_lite:
        # what the app would pay with the collections' own (Strong) consistency: the time-tick wait
        model, dim = cfg.models[0], model_dim(cfg.models[0])
        lat = []
        for i, q in enumerate(rng.normal(size=(cfg.curve_queries + 2, dim)).astype(np.float32)):
            t = time.perf_counter()
            store.search(EmbeddingKey(model, DATASET, SPLIT).collection_name, q[None], k=cfg.k, n_rows=cfg.rows)
            if i >= 2:
                lat.append((time.perf_counter() - t) * 1000)
        curve.append(
            {
                "model": model,
                "dim": dim,
                "rows": cfg.rows,
                "nq": 1,
                "k": cfg.k,
                "consistency": "Strong",
                "p50_ms": percentile(lat, 50),
                "p95_ms": percentile(lat, 95),
            }
        )
        log.info("scale search %s", curve[-1])
    store.close()
    total_rows = cfg.rows * len(cfg.models)
    total_s = sum(r["seconds"] for r in insert)
    return {"insert": insert, "insert_rows_per_s": round(total_rows / total_s, 1), "search_curve": curve}


def model_dim(model: str) -> int:
    from embed.models.catalog import REGISTRY

    return REGISTRY[model].dim


# the app's query ----------------------------------------------------------------------------------


def time_app(uri: str, cfg: ScaleConfig, data_root: str, labels: np.ndarray, config: RetrievalSettings) -> Dict:
    """The app backend answering a click (indexed image) and an upload, concurrent vs one column after another."""
    from PIL import Image

    from app.backend import AppSettings, Backend, Query, load_upload

    backend = Backend(AppSettings(uri=uri, data_root=data_root, split=SPLIT, retrieval=config))
    missing = [m for m in cfg.models if m not in backend.collections]
    if missing:
        raise RuntimeError(f"the app backend does not see the collections for {missing}")
    models = list(cfg.models)
    rng = np.random.default_rng(cfg.seed + 1)
    blank = Image.new("RGB", (64, 64))  # an indexed query's search uses its stored vector, not the pixels

    def sequential(query):
        return [backend.search(m, query, cfg.k) for m in models]

    def concurrent(query):
        return backend.search_all(models, query, cfg.k)

    ids = rng.choice(cfg.rows, size=cfg.app_queries + 3, replace=False)
    times: Dict[str, List[float]] = {"concurrent": [], "sequential": []}
    columns: Dict[str, List[float]] = {m: [] for m in models}
    same = True
    for i, row in enumerate(ids):
        # a click on an image the collections hold: the app searches only for an image every column has
        query = Query(blank, f"c{labels[row]:04d}", int(row), synthetic_relpath(int(row)))
        got = {}
        # alternate the order: neither mode always runs right after the other's cache warm-up
        for mode in ("concurrent", "sequential") if i % 2 else ("sequential", "concurrent"):
            t = time.perf_counter()
            results = (concurrent if mode == "concurrent" else sequential)(query)
            elapsed = (time.perf_counter() - t) * 1000
            problems = [r.problem for r in results if r.problem]
            if problems:
                raise RuntimeError(f"app search failed: {problems}")
            got[mode] = [[h.id for h in r.hits] for r in results]
            if i >= 3:  # the first clicks load the collections
                times[mode].append(elapsed)
                if mode == "concurrent":
                    for r in results:
                        columns[r.model].append(r.latency_ms)
        same &= got["concurrent"] == got["sequential"]

    upload: Dict[str, List[float]] = {"concurrent": [], "sequential": []}
    for i in range(cfg.upload_queries + 2):
        data = synthetic_upload(cfg.seed + i)
        for mode in ("concurrent", "sequential") if i % 2 else ("sequential", "concurrent"):
            t = time.perf_counter()
            query = Query(load_upload(data), None, None, "upload.jpg")
            results = (concurrent if mode == "concurrent" else sequential)(query)
            elapsed = (time.perf_counter() - t) * 1000
            if any(r.problem for r in results):
                raise RuntimeError(f"upload search failed: {[r.problem for r in results]}")
            if i >= 2:  # the first uploads load the three models
                upload[mode].append(elapsed)
    precision = backend.embedder(models[0]).embedder.precision_name
    random = all(backend.collections[m].meta.is_random for m in models)
    weights = "seeded random weights (--random-init)" if random else "the weights they loaded"
    backend.store.close()
    return {
        "app_query_ms_p50": percentile(times["concurrent"], 50),
        "app_query_ms_p95": percentile(times["concurrent"], 95),
        "app_query_sequential_ms_p50": percentile(times["sequential"], 50),
        "app_query_sequential_ms_p95": percentile(times["sequential"], 95),
        "app_query_samples": len(times["concurrent"]),
        "column_ms_p50_concurrent": {m: percentile(v, 50) for m, v in columns.items()},
        "concurrent_equals_sequential": bool(same),
        "upload_query_ms_p50": percentile(upload["concurrent"], 50),
        "upload_query_ms_p95": percentile(upload["concurrent"], 95),
        "upload_query_sequential_ms_p50": percentile(upload["sequential"], 50),
        "upload_query_samples": len(upload["concurrent"]),
        "upload_models": f"{', '.join(models)} with {weights}, {precision}, warm; timing only",
        "search_consistency": None if backend.store.is_lite else Backend.search_consistency,
    }


# evaluation in a child process --------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """This process's own peak RSS.

    Not ru_maxrss: Linux carries it over fork and exec, so a child started by the 4 GiB benchmark process would
    report the parent's figure. VmHWM belongs to the address space, which exec replaces.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def evaluate_child(uri: str, models: Sequence[str], features: Sequence[str], config: RetrievalSettings) -> Dict:
    """The exact leave-one-out evaluation as ``indexer evaluate`` runs it; time and this process's peak RSS."""
    from indexer.evaluation.evaluate import EvalConfig, evaluate
    from indexer.milvus_store import VectorStore

    store = VectorStore(uri, settings=config)
    t = time.perf_counter()
    report = evaluate(
        EvalConfig(split=SPLIT, dataset=DATASET, models=list(models), features=list(features), progress=False), store
    )
    seconds = time.perf_counter() - t
    store.close()
    return {
        "evaluate_s": round(seconds, 1),
        "evaluate_peak_rss_mib": round(peak_rss_mib(), 1),
        "features": sorted({r.features for r in report.results}),
        "precision_at_1": {f"{r.model}/{r.features}": round(r.precision["1"], 4) for r in report.results},
        "exact_s_per_model": {f"{r.model}/{r.features}": r.seconds for r in report.results},
    }


def run_evaluation(uri: str, models: Sequence[str], features: Sequence[str]) -> Dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.scale",
        "--evaluate",
        uri,
        "--models",
        ",".join(models),
        "--features",
        ",".join(features),
    ]
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        return {"failed": done.stderr.strip()[-2000:]}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = round(wall, 1)
    return out


# the whole section --------------------------------------------------------------------------------


def lite_slow_rows(curve: List[Dict], dim: int, ms: float = LITE_SLOW_MS) -> Optional[int]:
    """Rows at which Lite's nq=1 p50 crosses ``ms`` at ``dim`` (linear interpolation of the curve)."""
    points = sorted((r["rows"], r["p50_ms"]) for r in curve if r["dim"] == dim)
    for (r0, t0), (r1, t1) in zip(points, points[1:]):
        if t0 <= ms < t1:
            return int(r0 + (ms - t0) * (r1 - r0) / (t1 - t0))
    if points and points[0][1] >= ms:
        return points[0][0]
    return None


def bench_scale(quick: bool, cfg: Optional[ScaleConfig], config: RetrievalSettings) -> Dict:
    from benchmarks.milvus_server import start_embedded_milvus

    cfg = cfg or (QUICK if quick else ScaleConfig())
    labels = np.arange(cfg.rows) % cfg.classes
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    data_root = str(tmp / "data")  # the app only needs it to resolve thumbnails, which are not timed
    out: Dict = {
        "vectors": VECTORS_NOTE,
        "rows": cfg.rows,
        "models": list(cfg.models),
        "dims": {m: model_dim(m) for m in cfg.models},
        "config": asdict(cfg),
        "targets": {"app_query_ms_p50": TARGET_APP_QUERY_MS_P50, "evaluate_peak_rss_mib": TARGET_EVALUATE_PEAK_MIB},
        "backends": {},
    }
    log.info("scale: %d rows x %s, %s", cfg.rows, out["dims"], VECTORS_NOTE)
    server = None
    try:
        backends = {"lite": str(tmp / "scale.db")}
        if not cfg.server:
            out["server_skipped"] = "not asked for (ScaleConfig.server)"
        else:
            try:
                server = start_embedded_milvus(tmp / "server")
                backends["server"] = f"http://127.0.0.1:{server.listen_port}"
            except Exception as e:
                out["server_skipped"] = f"embedded Milvus server unavailable: {e}"
        for backend, uri in backends.items():
            row: Dict = {
                "uri_kind": "Milvus Lite (in-process)"
                if backend == "lite"
                else "embedded Milvus 2.3 standalone server (pip `milvus`)"
            }
            row.update(build_collections(uri, cfg, data_root, labels, config))
            row.update(time_app(uri, cfg, data_root, labels, config))
            log.info("scale app %s: %s", backend, {k: v for k, v in row.items() if k.startswith(("app_", "upload_"))})
            if backend == "lite":
                # Milvus Lite allows one process per database: let the evaluation child open it
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(uri)
            if cfg.evaluate:
                row.update(run_evaluation(uri, cfg.models, cfg.eval_features))
                log.info("scale evaluate %s: %s", backend, {k: v for k, v in row.items() if k.startswith("evaluate")})
            out["backends"][backend] = row
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    lite = out["backends"].get("lite", {})
    dim = model_dim(cfg.models[0])
    out["lite_slow"] = {
        "dim": dim,
        "ms": LITE_SLOW_MS,
        "rows": lite_slow_rows(lite.get("search_curve", []), dim),
        "note": f"rows at which Milvus Lite's nq=1 FLAT search p50 passes {LITE_SLOW_MS} ms at {dim} dims",
    }
    # the headline figures: the engine the build recommends at this size (the server when there is one)
    chosen = "server" if "server" in out["backends"] and "failed" not in out["backends"]["server"] else "lite"
    out["headline_backend"] = chosen
    for key in (
        "app_query_ms_p50",
        "app_query_ms_p95",
        "upload_query_ms_p50",
        "evaluate_s",
        "evaluate_peak_rss_mib",
        "insert_rows_per_s",
    ):
        out[key] = out["backends"].get(chosen, {}).get(key)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scale", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--evaluate", metavar="URI", required=True, help="run the evaluation child on this database")
    p.add_argument("--models", type=model_list, default=list(BLOG_MODELS), help="comma-separated models")
    p.add_argument("--features", default="raw", help="raw, normalized or both, comma-separated")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = benchmark_settings()
    print(json.dumps(evaluate_child(args.evaluate, args.models, args.features.split(","), config)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
