"""Approximate indexes at 50,000 rows: latency and recall@10 of HNSW and IVF_FLAT beside FLAT, on a Milvus server.

    python -m benchmarks.ann                 # 50,000 rows at 384 and 2048 dims (~15 min on 2 cores)
    python -m benchmarks.ann --quick         # 3,000 rows at 64 and 256 dims (about a minute)
    python -m benchmarks.ann --dims 384      # one dimension

The vectors are the scale benchmark's (benchmarks.scale.synthetic_vectors: Gaussian class clusters, 50 per class
like ImageNet val), one collection per dimension (the dims of vit and gresnet), on the embedded Milvus standalone
server (pip `milvus`). The measurement is `indexer ann`'s (indexer.evaluation.ann.evaluate_ann): the same seeded
queries, recall@10 against the exact top 10 computed outside Milvus, p50/p99 at nq=1, QPS at a batch. Synthetic
vectors: the figures say what the index costs in latency and neighbours found, not which backbone is better.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks import REPO, benchmark_settings, cpu_model
from embed.common.settings import RetrievalSettings

log = logging.getLogger("benchmarks")


@dataclass
class AnnBenchConfig:
    rows: int = 50_000
    classes: int = 1000
    dims: Sequence[int] = (384, 2048)
    hnsw: Sequence[str] = ("M=16", "efConstruction=200")
    hnsw_ef: Sequence[int] = (16, 32, 64, 128, 256)
    ivf: Sequence[str] = ("nlist=1024",)  # about 4 x sqrt(rows), Milvus' rule of thumb
    ivf_nprobe: Sequence[int] = (1, 4, 16, 64)
    queries: int = 500
    latency_queries: int = 100
    batch: int = 100
    resamples: int = 500
    seed: int = 0


QUICK = AnnBenchConfig(
    rows=3_000, classes=60, dims=(64, 256), hnsw_ef=(16, 64), ivf=("nlist=32",), ivf_nprobe=(1, 32),
    queries=100, latency_queries=20, batch=50, resamples=100,
)  # fmt: skip


def synthetic_sets(cfg: AnnBenchConfig):
    """One VectorSet per dimension: the scale benchmark's vectors, labelled by class, ids 0..rows-1."""
    from benchmarks.scale import synthetic_vectors
    from benchmarks.synthetic import synthetic_meta
    from indexer.evaluation.ann import VectorSet

    labels = np.arange(cfg.rows) % cfg.classes
    class_ids = [f"c{c:04d}" for c in labels]
    relpaths = [f"synthetic/{i:07d}.JPEG" for i in range(cfg.rows)]
    out = []
    for dim in cfg.dims:
        model = f"synthetic-{dim}d"
        meta = synthetic_meta(model, dim, "synthetic-ann", "/nonexistent")
        vectors = synthetic_vectors(np.random.default_rng(cfg.seed + dim), labels, cfg.classes, dim)
        collection = f"bench_ann_{dim}d"
        out.append(VectorSet(model, collection, meta, np.arange(cfg.rows), vectors, labels, class_ids, relpaths))
    return out


def summary(doc) -> List[Dict]:
    """The headline rows: per index setting and dimension, recall@10 and latency (the JSON's short form)."""
    rows = []
    for p in doc.points:
        for m in p.models:
            rows.append(
                {
                    "index": p.index,
                    "search": p.search,
                    "model": m.model,
                    "recall_at_10": round(m.recall_at_10.mean, 4),
                    "p50_ms": m.latency_p50_ms,
                    "p99_ms": m.latency_p99_ms,
                    "qps": m.qps,
                }
            )
    return rows


def bench_ann(
    quick: bool,
    cfg: Optional[AnnBenchConfig] = None,
    uri: Optional[str] = None,
    settings: Optional[RetrievalSettings] = None,
) -> Dict:
    """The benchmark's document; ``uri``: a running server to use instead of starting the embedded one;
    ``settings``: main's, for the store."""
    from benchmarks.milvus_server import start_embedded_milvus
    from indexer.evaluation.ann import AnnConfig, evaluate_ann
    from indexer.evaluation.document import to_plain
    from indexer.index_spec import make_index_spec, parse_sweep
    from indexer.milvus_store import VectorStore

    cfg = cfg or (QUICK if quick else AnnBenchConfig())
    tmp = Path(tempfile.mkdtemp(prefix="bench_ann_"))
    server = None
    try:
        if uri is None:
            server = start_embedded_milvus(tmp / "server")
            uri = f"http://127.0.0.1:{server.listen_port}"
        store = VectorStore(uri, search_budget_bytes=1 << 50, settings=settings)
        sets = synthetic_sets(cfg)
        sweeps = [
            (make_index_spec("HNSW", cfg.hnsw), parse_sweep(f"ef={','.join(map(str, cfg.hnsw_ef))}", "HNSW")),
            (
                make_index_spec("IVF_FLAT", cfg.ivf),
                parse_sweep(f"nprobe={','.join(map(str, cfg.ivf_nprobe))}", "IVF_FLAT"),
            ),
        ]
        ann = AnnConfig(
            *sweeps[0],
            more=sweeps[1:],
            queries=cfg.queries,
            latency_queries=cfg.latency_queries,
            batch=cfg.batch,
            seed=cfg.seed,
            resamples=cfg.resamples,
            progress=False,
        )
        log.info("ann benchmark: HNSW and IVF_FLAT over %d rows x %s dims", cfg.rows, list(cfg.dims))
        doc = evaluate_ann(store, sets, ann, "synthetic-ann", "val")
        assert doc is not None
        server_version = getattr(server, "version", None) if server is not None else None
        return {
            "benchmark": "ann",
            "vectors": "synthetic (benchmarks.scale.synthetic_vectors: Gaussian class clusters, "
            f"{cfg.rows // cfg.classes} per class)",
            "date": dt.date.today().isoformat(),
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
            "server": "embedded Milvus standalone (pip `milvus`)" + (f" {server_version}" if server_version else ""),
            "quick": quick,
            "config": asdict(cfg),
            "summary": summary(doc),
            "sentences": doc.sentences,
            "document": to_plain(replace(doc, target="embedded Milvus server")),
        }
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.ann", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="3,000 rows at 64 and 256 dims")
    p.add_argument("--uri", default=None, help="a running Milvus server (default: start the embedded one)")
    p.add_argument("--dims", default=None, help="comma-separated dimensions (default 384,2048; --quick 64,256)")
    p.add_argument(
        "--out", type=Path, default=None, help="JSON path (default benchmarks/results/cpu-<n>core/<date>-ann.json)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = QUICK if args.quick else AnnBenchConfig()
    if args.dims:
        cfg = replace(cfg, dims=tuple(int(d) for d in args.dims.split(",")))
    result = bench_ann(args.quick, cfg, uri=args.uri, settings=benchmark_settings())
    out = args.out or REPO / "benchmarks" / "results" / f"cpu-{os.cpu_count()}core" / f"{result['date']}-ann.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    for sentence in result["sentences"]:
        print(sentence)
    for row in result["summary"]:
        print(json.dumps(row))
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
