"""Cost of ``python -m indexer robustness``: a measured run on a fraction of the queries, projected to the full one.

    python -m benchmarks.robustness --uri /tmp/robbench/milvus.db --embeddings /tmp/robbench/emb --split val \\
        --models effnet-lite0,effnet-lite1,effnet-lite2 --queries 50 --target-queries 500 --database-rows 10000 \\
        --out benchmarks/results/cpu-2core/DATE-robustness.json

The measured run is the evaluation itself (``evaluate_collections``) with an empty cache, so every transformed
query is embedded: transforms, embedding (model loading included) and statistics grow with the number of queries
and are scaled linearly to ``--target-queries``. Search grows with queries x database rows: it is timed apart, on
``--database-rows`` synthetic vectors of each model's dimension and ``--target-queries`` queries, once per
condition and model. Reading the collections is scaled by rows. The JSON says which figure is measured and which
projected, and the load average while it ran (the 2 cores are shared).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict

import numpy as np

from benchmarks import benchmark_settings

log = logging.getLogger("benchmarks.robustness")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.robustness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--uri", required=True, help="Milvus Lite .db or server URI holding the collections")
    p.add_argument("--embeddings", type=Path, required=True, help="embeddings root (the collections' manifests)")
    p.add_argument("--split", default="val")
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--models", default="effnet-lite0,effnet-lite1,effnet-lite2")
    p.add_argument("--queries", type=int, default=50, help="queries actually embedded (default %(default)s)")
    p.add_argument("--target-queries", type=int, default=500, help="queries projected to (default %(default)s)")
    p.add_argument("--database-rows", type=int, default=10000, help="rows of the projected collections")
    p.add_argument("--families", default=None, help="default: the robustness command's default set")
    p.add_argument("--severities", type=int, default=3)
    p.add_argument("--out", type=Path, required=True, help="JSON result file")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )

    from embed.common.identity import EmbeddingKey
    from indexer.catalog import find_collection
    from indexer.evaluation.exact import ExactSearch
    from indexer.evaluation.query_transforms import DEFAULT_FAMILIES, parse_families
    from indexer.evaluation.robustness import TOP_K, RobustnessConfig, evaluate_collections
    from indexer.milvus_store import VectorStore

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    families = [f.name for f in parse_families(args.families)] if args.families else list(DEFAULT_FAMILIES)
    store = VectorStore(args.uri, settings=benchmark_settings())
    colls = [find_collection(store, m, args.split) for m in models]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="robustness-bench-") as tmp:
        # the manifests only: the run finds each collection's preprocessing as usual, and an empty cache
        for c in colls:
            src = EmbeddingKey(c.meta.model, c.meta.dataset, c.meta.split).folder(args.embeddings) / "manifest.json"
            dst = EmbeddingKey(c.meta.model, c.meta.dataset, c.meta.split).folder(Path(tmp)) / "manifest.json"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
        cfg = RobustnessConfig(
            split=args.split,
            models=models,
            data_root=args.data_root,
            embeddings=Path(tmp),
            queries=args.queries,
            families=families,
            severities=args.severities,
            progress=False,
        )
        t = time.perf_counter()
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        result = evaluate_collections(store, cfg)
        measured_wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_SELF)
        measured_cpu = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    load_after = os.getloadavg()
    timing = result.timing
    n_conditions = 1 + len(result.conditions)  # the clean queries are embedded too
    rows = {c.meta.model: store.count(c.name) for c in colls}

    # search: the target's queries against the target's rows, timed once per model, for every condition
    rng = np.random.default_rng(0)
    search_s = {}
    for c in colls:
        db = rng.normal(size=(args.database_rows, c.meta.dim)).astype(np.float32)
        q = rng.normal(size=(args.target_queries, c.meta.dim)).astype(np.float32)
        t = time.perf_counter()
        ExactSearch(db).ranked_search(q, TOP_K, rng.integers(0, args.database_rows, args.target_queries))
        search_s[c.meta.model] = time.perf_counter() - t
    scale = args.target_queries / len(result.query_ids)
    projected = {
        "read_collections_s": timing.read_collections_s * args.database_rows / max(1, np.mean(list(rows.values()))),
        "load_images_s": timing.load_images_s * scale,
        "transform_s": timing.transform_s * scale,
        "embed_s": timing.embed_s * scale,
        "embed_s_by_model": {m: s * scale for m, s in timing.embed_s_by_model.items()},
        "search_s": sum(search_s.values()) * n_conditions,
        "statistics_s": timing.statistics_s * scale,
    }
    projected["total_s"] = sum(v for k, v in projected.items() if k.endswith("_s") and k != "total_s")
    # on 2 cores that nobody else uses, the work takes its CPU seconds over the cores it keeps busy
    projected["total_cpu_s"] = measured_cpu * scale + projected["search_s"] * 2
    projected["idle_machine_wall_s_estimate"] = projected["total_cpu_s"] / 2
    doc: Dict[str, Any] = {
        "benchmark": "robustness evaluation (python -m indexer robustness)",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "note": "2 cores shared with other jobs; the load average says how busy they were",
        },
        "config": {
            "models": models,
            "families": families,
            "severities": args.severities,
            "conditions_per_model": n_conditions,
            "measured_queries": len(result.query_ids),
            "target_queries": args.target_queries,
            "collection_rows": rows,
            "projected_database_rows": args.database_rows,
        },
        "measured": {
            "wall_s": measured_wall,
            "cpu_s": measured_cpu,
            **asdict(timing),
            "embeddings": sum(timing.embedded.values()),
            "queries_per_s_by_model": {m: timing.embedded[m] / s for m, s in timing.embed_s_by_model.items()},
        },
        "search_timed_once_per_model_s": search_s,
        "projected": projected,
        "method": "measured on measured_queries with an empty cache; transforms, embedding and statistics scaled "
        "linearly to target_queries; search timed on synthetic vectors of target size (projected_database_rows "
        "x dim, target_queries queries) once per model, times the conditions; reading the collections scaled "
        "by rows",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(
        json.dumps(
            {
                "measured_wall_s": round(measured_wall, 1),
                "measured_cpu_s": round(measured_cpu, 1),
                "projected_total_s": round(projected["total_s"], 1),
                "projected_idle_wall_s": round(projected["idle_machine_wall_s_estimate"], 1),
                "queries_per_s_by_model": {
                    m: round(v, 1) for m, v in doc["measured"]["queries_per_s_by_model"].items()
                },
                "load_average": load_after,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
