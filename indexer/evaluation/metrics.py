"""Retrieval metrics on exact leave-one-out neighbours.

Protocol: every image queries all the others (itself excluded) by L2 distance. For a query with
R > 0 other images of its class:
  precision@k  fraction of the k nearest that share its class
  recall@k     1 if at least one of the k nearest shares its class (a.k.a. hit rate)
  R-precision  precision@R
  MAP@R        (1/R) * sum_{i<=R} precision@i * rel(i)    (Musgrave et al., 2020)
Queries whose class has no other member (R = 0) are left out of those and counted.
kNN top-1: majority class of the k nearest (k = 20), ties broken by the nearest tied class; every
query counts. The tie rule matters (about 17% of Tiny-ImageNet queries have a tied vote), so this figure
matches no other tool exactly. This is leave-one-out over one split; the DINO protocol (disjoint database
and queries, weighted vote) is in ``indexer.evaluation.knn``.

Every metric is a mean of per-query values; ``PerQuery`` keeps those values so that the report can
bootstrap and pair them without a second pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from indexer.evaluation.document import Protocol
from indexer.evaluation.exact import ExactSearch, Neighbours

PROTOCOL = Protocol(
    name="leave-one-out retrieval over one split",
    distance="L2 (squared L2 ranks identically)",
    features="raw: as stored; normalized: unit length (L2 ranking == cosine ranking)",
    precision_at_k="fraction of the k nearest other images with the query's class",
    recall_at_k="1 if any of the k nearest other images has the query's class",
    r_precision="precision@R, R = number of other images of the query's class",
    map_at_r="MAP@R (Musgrave, Belongie, Lim: A Metric Learning Reality Check, ECCV 2020)",
    knn_top1="majority vote of the 20 nearest, ties broken by nearest; all queries",
    excluded="queries with R = 0 are excluded from precision/recall/R-precision/MAP@R",
    note="This kNN@20 is leave-one-out within the split; the DINO-style weighted kNN on disjoint database and "
    "queries is --holdout or --database-split/--query-split (in the report)",
)


@dataclass
class PerQuery:
    """Per-query values behind the means; rows of the retrieval arrays are the queries with R > 0."""

    valid: np.ndarray  # (N,) bool: R > 0
    precision: Dict[str, np.ndarray]  # k -> (n_queries,) float
    hit: Dict[str, np.ndarray]  # k -> (n_queries,) bool, at least one same-class image in the top k
    r_precision: np.ndarray  # (n_queries,)
    ap_at_r: np.ndarray  # (n_queries,)
    knn_correct: np.ndarray  # (N,) bool, every query


@dataclass
class Metrics:
    n: int
    n_queries: int  # queries with R > 0
    precision: Dict[str, float]
    recall: Dict[str, float]
    r_precision: float
    map_at_r: float
    knn_top1: float
    excluded_singletons: int = 0  # queries with R = 0
    k_searched: int = 0
    per_query: Optional[PerQuery] = None


def encode_labels(labels: Union[Sequence, np.ndarray]) -> np.ndarray:
    _, codes = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    return codes.astype(np.int64)


def needed_k(labels: np.ndarray, ks: Sequence[int], knn_k: int) -> int:
    counts = np.bincount(labels)
    return int(max(max(ks), knn_k, counts.max() - 1))


def retrieval_metrics(neigh: Neighbours, labels: np.ndarray, ks: Sequence[int], knn_k: int = 20) -> Metrics:
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    idx = neigh.index
    K = idx.shape[1]
    rel = labels[idx] == labels[:, None]  # (N, K)
    r = np.bincount(labels)[labels] - 1  # other members of the query's class
    valid = r > 0
    if np.any(r[valid] > K):
        raise ValueError(f"neighbour lists of length {K} are shorter than the largest class ({r.max()})")
    nq = int(valid.sum())
    relv = rel[valid]
    cum = np.cumsum(relv, axis=1)
    precision, recall, prec_q, hit_q = {}, {}, {}, {}
    for k in ks:
        kk = min(k, K)
        prec_q[str(k)] = cum[:, kk - 1] / k
        hit_q[str(k)] = cum[:, kk - 1] > 0
        precision[str(k)] = _mean(prec_q[str(k)])
        recall[str(k)] = _mean(hit_q[str(k)])
    rv = r[valid]
    rprec_q = cum[np.arange(nq), rv - 1] / rv if nq else np.zeros(0)
    ranks = np.arange(1, K + 1)
    within_r = ranks[None, :] <= rv[:, None]
    ap = (relv * within_r * cum / ranks[None, :]).sum(1) / np.maximum(rv, 1)
    knn_correct = knn_predict(labels[idx[:, : min(knn_k, K)]]) == labels
    per_query = PerQuery(valid, prec_q, hit_q, rprec_q, ap, knn_correct)
    return Metrics(
        n=n,
        n_queries=nq,
        precision=precision,
        recall=recall,
        r_precision=_mean(rprec_q),
        map_at_r=_mean(ap),
        knn_top1=float(knn_correct.mean()),
        excluded_singletons=int(n - nq),
        k_searched=K,
        per_query=per_query,
    )


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def knn_predict(neighbour_labels: np.ndarray) -> np.ndarray:
    """Majority label per row; among tied labels, the one ranked nearest wins."""
    nl = np.asarray(neighbour_labels)
    k = nl.shape[1]
    votes = (nl[:, :, None] == nl[:, None, :]).sum(-1)  # votes[i, j]: how many share j's label
    score = votes * (k + 1) - np.arange(k)[None, :]  # more votes first, then nearer
    return nl[np.arange(len(nl)), score.argmax(1)]


TIE_RTOL = 1e-6  # float32 rounding: distances closer than this are ties, and tied items may come in any order


def true_neighbours(vectors: np.ndarray, query_rows: npt.ArrayLike, k: int) -> Neighbours:
    """The exact float64 lists of a few query rows (self excluded): the ground truth for cross-checks."""
    rows = np.asarray(query_rows, dtype=np.int64)
    index, distance = ExactSearch(vectors).search(vectors[rows], k, exclude=rows)
    return Neighbours(index, distance)


def same_up_to_ties(
    got: npt.ArrayLike,
    truth_index: np.ndarray,
    truth_distance: np.ndarray,
    vectors: np.ndarray,
    query: int,
    rtol: float = TIE_RTOL,
) -> bool:
    """True if ``got`` (row indices) is the true top-k list, except for swaps between items whose true
    distances are equal within ``rtol`` (relative). Positions are compared one by one: an item may stand in
    for another only at the same true distance, so a missed or extra neighbour always fails."""
    rows = np.asarray(got, dtype=np.int64)
    k = len(truth_index)
    if len(rows) != k or len(set(rows.tolist())) != k or query in set(rows.tolist()):
        return False
    if np.array_equal(rows, truth_index):
        return True
    d_got = ((np.asarray(vectors[rows], np.float64) - np.asarray(vectors[query], np.float64)) ** 2).sum(1)
    scale = np.maximum(np.abs(truth_distance), np.abs(d_got))
    return bool(np.all(np.abs(d_got - truth_distance) <= rtol * scale))


def compare_with_milvus(
    exact: Neighbours,
    query_rows: npt.ArrayLike,
    milvus_hits: List[List[Dict]],
    ids: np.ndarray,
    vectors: np.ndarray,
    rtol: float = TIE_RTOL,
) -> Tuple[int, List[Dict]]:
    """How many neighbour lists, from Milvus and from the exact computation, both equal the float64 truth
    (ties within ``rtol`` aside); and the disagreements. ``ids`` must be sorted (row i holds ids[i])."""
    k = min(len(h) for h in milvus_hits) if milvus_hits else 0
    rows = np.asarray(query_rows, dtype=np.int64)
    truth = true_neighbours(vectors, rows, k)
    agree, bad = 0, []
    for j, (row, hits) in enumerate(zip(rows, milvus_hits)):
        got_rows = np.searchsorted(ids, [h["id"] for h in hits[:k]])
        ok_milvus = same_up_to_ties(got_rows, truth.index[j], truth.distance[j], vectors, row, rtol)
        ok_exact = same_up_to_ties(exact.index[row, :k], truth.index[j], truth.distance[j], vectors, row, rtol)
        if ok_milvus and ok_exact:
            agree += 1
        else:
            bad.append(
                {
                    "query_id": int(ids[row]),
                    "milvus": [h["id"] for h in hits[:k]],
                    "exact": ids[exact.index[row, :k]].tolist(),
                    "truth": ids[truth.index[j]].tolist(),
                    "milvus_ok": ok_milvus,
                    "exact_ok": ok_exact,
                }
            )
    return agree, bad
