"""``indexer evaluate``: precision@k and friends for every indexed model, exact, cross-checked in Milvus."""
from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from embed.vectors import l2_normalize
from .metrics import PROTOCOL, compare_with_milvus, encode_labels, exact_neighbours, needed_k, retrieval_metrics
from embed.keys import EmbeddingKey

from .store import StoreError, VectorStore

log = logging.getLogger(__name__)


class EvaluationError(StoreError):
    pass


@dataclass
class EvalConfig:
    split: str
    dataset: str
    models: Sequence[str]
    ks: Sequence[int] = (1, 5, 10, 20, 100)
    features: Sequence[str] = ("raw", "normalized")
    knn_k: int = 20
    device: str = "auto"
    milvus_check: int = 0
    time_naive: int = 0          # queries of a naive one-search-per-query Milvus evaluation to time
    seed: int = 0
    progress: bool = True


@dataclass
class ModelResult:
    model: str
    features: str
    n: int
    n_queries: int
    precision: Dict[str, float]
    recall: Dict[str, float]
    r_precision: float
    map_at_r: float
    knn_top1: float
    weights: str
    random_weights: bool
    collection: str
    seconds: float
    milvus_check: Optional[Dict] = None
    extra: Dict = field(default_factory=dict)


def evaluate(cfg: EvalConfig, store: VectorStore) -> Dict:
    from embed.embedder import resolve_device
    device = str(resolve_device(cfg.device))
    results: List[ModelResult] = []
    for model in cfg.models:
        name = EmbeddingKey(model, cfg.dataset, cfg.split).collection_name
        meta = store.meta(name)
        if meta is None:
            raise EvaluationError(f"no collection for {model} on {cfg.dataset}/{cfg.split}: run "
                                  f"`python -m indexer build --model {model} --split {cfg.split} --data-root ...` first")
        ids, vectors, class_ids, _ = store.read_all(name, progress=cfg.progress)
        labels = encode_labels(class_ids)
        k = needed_k(labels, cfg.ks, cfg.knn_k)
        weights = "RANDOM (--random-init)" if meta.is_random else f"{meta.weights_source}: {meta.weights_fingerprint}"
        for variant in cfg.features:
            feats = l2_normalize(vectors) if variant == "normalized" else vectors
            t = time.perf_counter()
            neigh = exact_neighbours(feats, k, device=device, progress=cfg.progress)
            m = retrieval_metrics(neigh, labels, cfg.ks, cfg.knn_k)
            seconds = time.perf_counter() - t
            result = ModelResult(model, variant, m.n, m.n_queries, m.precision, m.recall, m.r_precision,
                                 m.map_at_r, m.knn_top1, weights, meta.is_random, name, round(seconds, 3), extra=m.extra)
            stored_variant = "normalized" if meta.normalized else "raw"
            if cfg.milvus_check and variant == stored_variant:
                result.milvus_check = _milvus_check(store, name, neigh, ids, feats, cfg)
            if cfg.time_naive and variant == stored_variant:
                result.extra["naive"] = _time_naive(store, name, ids, feats, labels, k, seconds, cfg)
            log.info("%s/%s: P@1 %.4f  MAP@R %.4f  kNN %.4f  (%.1f s exact)", model, variant,
                     m.precision.get("1", float("nan")), m.map_at_r, m.knn_top1, seconds)
            results.append(result)
    return {
        "protocol": {**PROTOCOL, "split": cfg.split, "dataset": cfg.dataset, "ks": list(cfg.ks), "knn_k": cfg.knn_k,
                     "computation": f"exact, chunked torch matmul on {device}, vectors read back from Milvus "
                                    f"with a query iterator"},
        "results": [asdict(r) for r in results],
    }


def _milvus_check(store: VectorStore, name: str, neigh, ids: np.ndarray, feats: np.ndarray, cfg: EvalConfig) -> Dict:
    rng = np.random.default_rng(cfg.seed)
    rows = rng.choice(len(ids), size=min(cfg.milvus_check, len(ids)), replace=False)
    k = min(10, neigh.index.shape[1])
    hits = store.search(name, feats[rows], k=k, n_rows=len(ids), exclude_self_ids=ids[rows])
    agree, bad = compare_with_milvus(neigh, rows, hits, ids)
    check = {"queries": int(len(rows)), "k": k, "agree": agree, "disagree": len(bad), "examples": bad[:3]}
    if bad:
        raise EvaluationError(f"Milvus and the exact computation disagree on {len(bad)}/{len(rows)} neighbour lists "
                              f"for {name}: {bad[:2]}")
    return check


def naive_search(store: VectorStore, name: str, feats: np.ndarray, ids: np.ndarray, k: int, n: int,
                 progress: bool = False):
    """The first ``n`` rows as leave-one-out queries, one Milvus search each: (hit lists, seconds)."""
    from tqdm import tqdm
    t = time.perf_counter()
    hits = [store.search(name, feats[i:i + 1], k=k, n_rows=len(ids), exclude_self_ids=ids[i:i + 1])[0]
            for i in tqdm(range(n), desc=f"naive {name}", disable=not progress, unit="query")]
    return hits, time.perf_counter() - t


def _time_naive(store: VectorStore, name: str, ids: np.ndarray, feats: np.ndarray, labels: np.ndarray, k: int,
                exact_seconds: float, cfg: EvalConfig) -> Dict:
    """The evaluation done naively: one Milvus search per query, timed against the exact computation."""
    n = min(cfg.time_naive, len(ids))
    hits, seconds = naive_search(store, name, feats, ids, k, n, progress=cfg.progress)
    index = {int(v): j for j, v in enumerate(ids)}
    p1 = float(np.mean([labels[index[h[0]["id"]]] == labels[i] for i, h in enumerate(hits)]))
    full = seconds * len(ids) / n
    return {"queries": n, "seconds": round(seconds, 2), "seconds_for_all": round(full, 1), "extrapolated": n < len(ids),
            "exact_seconds": round(exact_seconds, 3), "exact_over_naive": round(full / exact_seconds, 1),
            "naive_precision_at_1": p1}


# output -----------------------------------------------------------------------------------------

def markdown_table(report: Dict) -> str:
    ks = report["protocol"]["ks"]
    head = ["model", "features", "n"] + [f"P@{k}" for k in ks] + [f"R@{k}" for k in ks[:3]] + \
           ["R-prec", "MAP@R", "kNN@20", "weights"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["results"]:
        cells = [r["model"] + (" ⚠random" if r["random_weights"] else ""), r["features"], str(r["n"])]
        cells += [f"{r['precision'][str(k)]:.4f}" for k in ks]
        cells += [f"{r['recall'][str(k)]:.4f}" for k in ks[:3]]
        cells += [f"{r['r_precision']:.4f}", f"{r['map_at_r']:.4f}", f"{r['knn_top1']:.4f}",
                  "RANDOM" if r["random_weights"] else r["weights"].split(":")[0]]
        lines.append("| " + " | ".join(cells) + " |")
    p = report["protocol"]
    lines.append("")
    lines.append(f"Protocol: {p['name']} on {p['dataset']}/{p['split']}; {p['distance']}; {p['excluded']}; "
                 f"kNN: {p['knn_top1']}. {p['note']}. Computation: {p['computation']}.")
    for r in report["results"]:
        naive = r.get("extra", {}).get("naive")
        if naive:
            lines.append(f"{r['model']}: exact evaluation {naive['exact_seconds']} s vs naive per-query Milvus search "
                         f"{naive['seconds_for_all']} s for all {r['n']} queries"
                         f"{' (extrapolated from ' + str(naive['queries']) + ')' if naive['extrapolated'] else ''}: "
                         f"{naive['exact_over_naive']}x faster; naive P@1 {naive['naive_precision_at_1']:.4f}")
    if any(r["random_weights"] for r in report["results"]):
        lines.append("⚠ rows marked random use RANDOM weights (no pretrained weights were available): not a "
                     "measure of the architecture.")
    return "\n".join(lines)


def write_csv(report: Dict, path: Path) -> None:
    ks = report["protocol"]["ks"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "features", "n", "n_queries"] + [f"precision@{k}" for k in ks] +
                   [f"recall@{k}" for k in ks] + ["r_precision", "map_at_r", "knn_top1", "random_weights", "weights"])
        for r in report["results"]:
            w.writerow([r["model"], r["features"], r["n"], r["n_queries"]] +
                       [r["precision"][str(k)] for k in ks] + [r["recall"][str(k)] for k in ks] +
                       [r["r_precision"], r["map_at_r"], r["knn_top1"], r["random_weights"], r["weights"]])


def write_plot(report: Dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ks = report["protocol"]["ks"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for r in report["results"]:
        label = f"{r['model']} ({r['features']})" + (" [RANDOM weights]" if r["random_weights"] else "")
        ax.plot(ks, [r["precision"][str(k)] for k in ks], marker="o",
                linestyle="--" if r["features"] == "normalized" else "-", label=label)
    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("k")
    ax.set_ylabel("precision@k")
    p = report["protocol"]
    ax.set_title(f"Leave-one-out precision@k, {p['dataset']}/{p['split']}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_json(report: Dict, path: Path) -> None:
    Path(path).write_text(json.dumps(report, indent=1))
