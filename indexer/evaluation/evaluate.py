"""``indexer evaluate``: precision@k and friends for every indexed model, exact, cross-checked in Milvus."""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from embed.common.identity import EmbeddingKey
from embed.common.vectors import l2_normalize
from indexer.build_command import DIR, BuildCommand
from indexer.evaluation.document import SCHEMA_VERSION, DinoKnn, Evaluation, MilvusCheck, ModelResult, NaiveTiming
from indexer.evaluation.exact import ExactSearch, Neighbours
from indexer.evaluation.metrics import (
    PROTOCOL,
    PerQuery,
    compare_with_milvus,
    encode_labels,
    needed_k,
    retrieval_metrics,
)
from indexer.index_spec import IndexSpec
from indexer.milvus_store import StoreError, VectorStore

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
    time_naive: int = 0  # queries of a naive one-search-per-query Milvus evaluation to time
    seed: int = 0
    progress: bool = True
    # DINO-style kNN (indexer.evaluation.knn): a class-stratified holdout of the split, or two splits
    holdout: float = 0.0
    database_split: Optional[str] = None
    query_split: Optional[str] = None
    chunk_rows: int = 65536
    data_root: Optional[str] = None  # the indexed data root, for the build commands the errors suggest
    labels: str = ""  # how the images are labelled, in words, for every output

    def build_command(self, model: str, split: str) -> str:
        return str(BuildCommand(model, split, self.data_root or DIR))


@dataclass
class Run:
    """What the report needs from one model and feature variant beyond the means: per-query values."""

    model: str
    features: str
    ids: np.ndarray
    class_ids: List[str]
    relpaths: List[str]
    labels: np.ndarray
    neighbours: Neighbours
    per_query: PerQuery
    dino_correct: Optional[np.ndarray] = None


def evaluate(cfg: EvalConfig, store: VectorStore) -> Evaluation:
    return evaluate_runs(cfg, store)[0]


def evaluate_runs(cfg: EvalConfig, store: VectorStore) -> Tuple[Evaluation, List[Run]]:
    """The evaluation report, and the per-query values of every model and variant (for ``indexer.evaluation.report``)."""
    from embed.extraction.embedder import resolve_device

    device = str(resolve_device(cfg.device))
    results: List[ModelResult] = []
    runs: List[Run] = []
    for model in cfg.models:
        name = EmbeddingKey(model, cfg.dataset, cfg.split).collection_name
        meta = store.meta(name)
        if meta is None:
            raise EvaluationError(
                f"no collection for {model} on {cfg.dataset}/{cfg.split}: run "
                f"`{cfg.build_command(model, cfg.split)}` first"
            )
        ids, vectors, class_ids, relpaths = store.read_all(name, progress=cfg.progress)
        labels = encode_labels(class_ids)
        k = needed_k(labels, cfg.ks, cfg.knn_k)
        weights = meta.weights_label
        dino = _dino_knn(cfg, store, model, vectors, labels, device)
        for variant in cfg.features:
            feats = l2_normalize(vectors) if variant == "normalized" else vectors
            t = time.perf_counter()
            neigh = ExactSearch(feats).leave_one_out(k, device=device, progress=cfg.progress)
            m = retrieval_metrics(neigh, labels, cfg.ks, cfg.knn_k)
            seconds = time.perf_counter() - t
            result = ModelResult(
                model,
                variant,
                m.n,
                m.n_queries,
                m.precision,
                m.recall,
                m.r_precision,
                m.map_at_r,
                m.knn_top1,
                weights,
                meta.is_random,
                name,
                round(seconds, 3),
                index=meta.index.label,
                excluded_singletons=m.excluded_singletons,
                k_searched=m.k_searched,
                identity=meta.identity,
                dino_knn=None
                if dino is None
                else DinoKnn(
                    dino.top1, dino.top5, dino.n_queries, dino.n_database, dino.protocol, round(dino.seconds, 2)
                ),
            )
            stored_variant = "normalized" if meta.normalized else "raw"
            if cfg.milvus_check:
                result.milvus_check = _cross_check_in_milvus(
                    store, name, neigh, ids, feats, class_ids, relpaths, cfg, variant_differs=variant != stored_variant
                )
            if cfg.time_naive and variant == stored_variant:
                result.naive = _time_naive(store, name, ids, feats, labels, k, seconds, cfg)
            log.info(
                "%s/%s: P@1 %.4f  MAP@R %.4f  kNN %.4f  (%.1f s exact)",
                model,
                variant,
                m.precision.get("1", float("nan")),
                m.map_at_r,
                m.knn_top1,
                seconds,
            )
            results.append(result)
            assert m.per_query is not None  # retrieval_metrics always keeps them
            runs.append(
                Run(
                    model,
                    variant,
                    ids,
                    class_ids,
                    relpaths,
                    labels,
                    neigh,
                    m.per_query,
                    None if dino is None else dino.correct,
                )
            )
    protocol = replace(
        PROTOCOL,
        split=cfg.split,
        dataset=cfg.dataset,
        ks=list(cfg.ks),
        knn_k=cfg.knn_k,
        computation=f"exact, chunked torch matmul on {device}, vectors read back from Milvus with a query iterator",
        labels=cfg.labels,
    )
    return Evaluation(protocol, results), runs


def _dino_knn(cfg: EvalConfig, store: VectorStore, model: str, vectors: np.ndarray, labels: np.ndarray, device: str):
    """DINO-style kNN for one model: a holdout of the evaluated split, or query split vs streamed database split."""
    from indexer.evaluation import knn

    kcfg = knn.KnnConfig(k=20, temperature=0.07, chunk_rows=cfg.chunk_rows, device=device)
    if cfg.database_split and cfg.query_split:
        q_name = EmbeddingKey(model, cfg.dataset, cfg.query_split).collection_name
        db_name = EmbeddingKey(model, cfg.dataset, cfg.database_split).collection_name
        for split, coll in ((cfg.query_split, q_name), (cfg.database_split, db_name)):
            if store.meta(coll) is None:
                raise EvaluationError(
                    f"DINO kNN needs {model} on {cfg.dataset}/{split}: run `{cfg.build_command(model, split)}` first"
                )
        _, q_vectors, q_classes, _ = store.read_all(q_name, progress=cfg.progress)
        codes: Dict[str, int] = {}
        q_labels = np.asarray([codes.setdefault(c, len(codes)) for c in q_classes], np.int64)
        database = knn.milvus_chunks(store, db_name, codes, cfg.chunk_rows)
        protocol = f"database {cfg.dataset}/{cfg.database_split} (streamed from Milvus), queries {cfg.query_split}"
        return knn.dino_knn(
            q_vectors, q_labels, database, None, kcfg, protocol, cfg.progress, total_rows=store.count(db_name)
        )
    if cfg.holdout:
        q_rows, db_rows = knn.stratified_holdout(labels, cfg.holdout, cfg.seed)
        protocol = (
            f"class-stratified holdout of {cfg.dataset}/{cfg.split}: {len(q_rows)} queries "
            f"({cfg.holdout:.0%} of each class, seed {cfg.seed}) against the other {len(db_rows)} rows"
        )
        return knn.dino_knn(
            vectors[q_rows],
            labels[q_rows],
            knn.array_chunks(vectors[db_rows], labels[db_rows], cfg.chunk_rows),
            int(labels.max()) + 1,
            kcfg,
            protocol,
        )
    return None


def _cross_check_in_milvus(
    store: VectorStore,
    name: str,
    neigh,
    ids: np.ndarray,
    feats: np.ndarray,
    class_ids,
    relpaths,
    cfg: EvalConfig,
    variant_differs: bool = False,
) -> MilvusCheck:
    """N random queries searched in Milvus; Milvus and the exact lists must both equal the float64 truth.

    ``variant_differs``: the collection stores the other variant, so these vectors go into a temporary collection
    (dropped afterwards) and Milvus searches exactly what the exact computation ranked."""
    scratch = variant_differs
    rng = np.random.default_rng(cfg.seed)
    rows = np.sort(rng.choice(len(ids), size=min(cfg.milvus_check, len(ids)), replace=False))
    k = min(10, neigh.index.shape[1])
    target = name
    stored = store.meta(name)
    assert stored is not None  # evaluate_runs found it
    # the check is of Milvus' exact search: a collection served through an approximate index is copied to a FLAT
    # one (what an index costs is `indexer ann`'s to measure)
    scratch = scratch or not stored.index.exact
    if scratch:
        target = f"{name}__xcheck"
        identity = stored.identity.with_normalized(not stored.normalized) if variant_differs else stored.identity
        meta = replace(stored, identity=identity, complete=False, index=IndexSpec())
        store.drop(target)
        store.ensure_collection(target, meta)
        store.upsert(target, ids, feats, class_ids, relpaths, progress=False)
        store.flush(target)
    try:
        hits = store.search(target, feats[rows], k=k, n_rows=len(ids), exclude_self_ids=ids[rows])
    finally:
        if scratch:
            store.drop(target)
    agree, bad = compare_with_milvus(neigh, rows, hits, ids, feats)
    check = MilvusCheck(
        queries=int(len(rows)),
        k=k,
        agree=agree,
        disagree=len(bad),
        collection="temporary copy" if scratch else "as built",
        rule="identical id lists, except swaps between neighbours whose float64 distances are equal "
        "within relative 1e-6",
        examples=[str(b) for b in bad[:3]],
    )
    if bad:
        raise EvaluationError(
            f"Milvus, the exact computation and a float64 brute force disagree on {len(bad)}/"
            f"{len(rows)} neighbour lists for {name}: {bad[:2]}"
        )
    return check


def naive_search(
    store: VectorStore, name: str, feats: np.ndarray, ids: np.ndarray, k: int, n: int, progress: bool = False
):
    """The first ``n`` rows as leave-one-out queries, one Milvus search each: (hit lists, seconds)."""
    from tqdm import tqdm

    t = time.perf_counter()
    hits = [
        store.search(name, feats[i : i + 1], k=k, n_rows=len(ids), exclude_self_ids=ids[i : i + 1])[0]
        for i in tqdm(range(n), desc=f"naive {name}", disable=not progress, unit="query")
    ]
    return hits, time.perf_counter() - t


def _time_naive(
    store: VectorStore,
    name: str,
    ids: np.ndarray,
    feats: np.ndarray,
    labels: np.ndarray,
    k: int,
    exact_seconds: float,
    cfg: EvalConfig,
) -> NaiveTiming:
    """The evaluation done naively: one Milvus search per query, timed against the exact computation."""
    n = min(cfg.time_naive, len(ids))
    hits, seconds = naive_search(store, name, feats, ids, k, n, progress=cfg.progress)
    index = {int(v): j for j, v in enumerate(ids)}
    p1 = float(np.mean([labels[index[h[0]["id"]]] == labels[i] for i, h in enumerate(hits)]))
    full = seconds * len(ids) / n
    return NaiveTiming(
        queries=n,
        seconds=round(seconds, 2),
        seconds_for_all=round(full, 1),
        extrapolated=n < len(ids),
        exact_seconds=round(exact_seconds, 3),
        exact_over_naive=round(full / exact_seconds, 1),
        naive_precision_at_1=p1,
    )


# output -----------------------------------------------------------------------------------------


def markdown_table(evaluation: Evaluation) -> str:
    from indexer.evaluation.sections import results_table

    table = results_table(evaluation)
    lines = ["| " + " | ".join(table.headers) + " |", "|" + "---|" * len(table.headers)]
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    p = evaluation.protocol
    lines.append("")
    lines.append(
        f"Protocol: {p.name} on {p.dataset}/{p.split}; {p.distance}; {p.excluded}; "
        f"kNN: {p.knn_top1}. {p.note}. Computation: {p.computation}." + (f" Labels: {p.labels}." if p.labels else "")
    )
    for r in evaluation.results:
        naive = r.naive
        if naive:
            lines.append(
                f"{r.model}: exact evaluation {naive.exact_seconds} s vs naive per-query Milvus search "
                f"{naive.seconds_for_all} s for all {r.n} queries"
                f"{' (extrapolated from ' + str(naive.queries) + ')' if naive.extrapolated else ''}: "
                f"{naive.exact_over_naive}x faster; naive P@1 {naive.naive_precision_at_1:.4f}"
            )
    if any(r.random_weights for r in evaluation.results):
        lines.append(
            "⚠ rows marked random use RANDOM weights (no pretrained weights were available): not a "
            "measure of the architecture."
        )
    return "\n".join(lines)


def write_csv(evaluation: Evaluation, path: Path) -> None:
    ks = evaluation.protocol.ks
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["model", "features", "n", "n_queries"]
            + [f"precision@{k}" for k in ks]
            + [f"recall@{k}" for k in ks]
            + ["r_precision", "map_at_r", "knn_top1", "random_weights", "weights"]
        )
        for r in evaluation.results:
            w.writerow(
                [r.model, r.features, r.n, r.n_queries]
                + [r.precision[str(k)] for k in ks]
                + [r.recall[str(k)] for k in ks]
                + [r.r_precision, r.map_at_r, r.knn_top1, r.random_weights, r.weights]
            )


def write_plot(evaluation: Evaluation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from indexer.evaluation.colours import model_colours

    ks = evaluation.protocol.ks
    colours = model_colours([r.model for r in evaluation.results])
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for r in evaluation.results:
        label = f"{r.model} ({r.features})" + (" [RANDOM weights]" if r.random_weights else "")
        ax.plot(
            ks,
            [r.precision[str(k)] for k in ks],
            marker="o",
            linestyle="--" if r.features == "normalized" else "-",
            color=colours[r.model],  # the model's colour in every figure; the line style tells the features
            label=label,
        )
    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("k")
    ax.set_ylabel("precision@k")
    p = evaluation.protocol
    ax.set_title(f"Leave-one-out precision@k, {p.dataset}/{p.split}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_json(evaluation: Evaluation, path: Path) -> None:
    from indexer.evaluation.document import to_plain

    Path(path).write_text(json.dumps({"schema_version": SCHEMA_VERSION, **to_plain(evaluation)}, indent=1))
