"""Retrieval metrics on exact leave-one-out neighbours.

Protocol: every image queries all the others (itself excluded) by L2 distance. For a query with
R > 0 other images of its class:
  precision@k  fraction of the k nearest that share its class
  recall@k     1 if at least one of the k nearest shares its class (a.k.a. hit rate)
  R-precision  precision@R
  MAP@R        (1/R) * sum_{i<=R} precision@i * rel(i)    (Musgrave et al., 2020)
Queries whose class has no other member (R = 0) are left out of those and counted.
kNN top-1: majority class of the k nearest (k = 20), ties broken by the nearest tied class; every
query counts. This is leave-one-out over one split, not DINO's train-set-as-database protocol.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

PROTOCOL = {
    "name": "leave-one-out retrieval over one split",
    "distance": "L2 (squared L2 ranks identically)",
    "features": "raw: as stored; normalized: unit length (L2 ranking == cosine ranking)",
    "precision@k": "fraction of the k nearest other images with the query's class",
    "recall@k": "1 if any of the k nearest other images has the query's class",
    "r_precision": "precision@R, R = number of other images of the query's class",
    "map_at_r": "MAP@R (Musgrave, Belongie, Lim: A Metric Learning Reality Check, ECCV 2020)",
    "knn_top1": "majority vote of the 20 nearest, ties broken by nearest; all queries",
    "excluded": "queries with R = 0 are excluded from precision/recall/R-precision/MAP@R",
    "note": "not DINO-style kNN, which uses the train split as database and val as queries",
}


@dataclass
class Neighbours:
    index: np.ndarray      # (N, K) int64, nearest first, self excluded
    distance: np.ndarray   # (N, K) float32 squared L2


def exact_neighbours(vectors: np.ndarray, k: int, device: str = "cpu", chunk: Optional[int] = None,
                     memory_budget: int = 1 << 30, progress: bool = False) -> Neighbours:
    """Exact k nearest others of every row, in row chunks sized to ``memory_budget`` bytes."""
    from tqdm import tqdm
    n, dim = vectors.shape
    k = min(k, n - 1)
    dev = torch.device(device)
    x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(dev)
    sq = (x * x).sum(1)
    chunk = chunk or max(1, min(n, memory_budget // max(1, n * 4 * 3)))
    out_i = np.empty((n, k), np.int64)
    out_d = np.empty((n, k), np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, n, chunk), disable=not progress, desc="exact kNN", unit="chunk"):
            stop = min(start + chunk, n)
            q = x[start:stop]
            d = torch.addmm(sq[None, :], q, x.T, alpha=-2.0).add_(sq[start:stop, None]).clamp_(min=0)
            rows = torch.arange(stop - start, device=dev)
            d[rows, rows + start] = math.inf
            vals, idx = torch.topk(d, k, dim=1, largest=False, sorted=True)
            out_i[start:stop] = idx.cpu().numpy()
            out_d[start:stop] = vals.cpu().numpy()
    return Neighbours(out_i, out_d)


@dataclass
class Metrics:
    n: int
    n_queries: int                 # queries with R > 0
    precision: Dict[str, float]
    recall: Dict[str, float]
    r_precision: float
    map_at_r: float
    knn_top1: float
    extra: Dict = field(default_factory=dict)


def encode_labels(labels: Sequence) -> np.ndarray:
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
    rel = labels[idx] == labels[:, None]                      # (N, K)
    r = np.bincount(labels)[labels] - 1                        # other members of the query's class
    valid = r > 0
    if np.any(r[valid] > K):
        raise ValueError(f"neighbour lists of length {K} are shorter than the largest class ({r.max()})")
    nq = int(valid.sum())
    relv = rel[valid]
    cum = np.cumsum(relv, axis=1)
    precision, recall = {}, {}
    for k in ks:
        kk = min(k, K)
        precision[str(k)] = float((cum[:, kk - 1] / k).mean()) if nq else float("nan")
        recall[str(k)] = float((cum[:, kk - 1] > 0).mean()) if nq else float("nan")
    rv = r[valid]
    r_precision = float((cum[np.arange(nq), rv - 1] / rv).mean()) if nq else float("nan")
    ranks = np.arange(1, K + 1)
    within_r = ranks[None, :] <= rv[:, None]
    ap = (relv * within_r * cum / ranks[None, :]).sum(1) / rv
    map_at_r = float(ap.mean()) if nq else float("nan")
    knn = knn_predict(labels[idx[:, :min(knn_k, K)]])
    return Metrics(n=n, n_queries=nq, precision=precision, recall=recall, r_precision=r_precision,
                   map_at_r=map_at_r, knn_top1=float((knn == labels).mean()),
                   extra={"excluded_singletons": int(n - nq), "k_searched": K})


def knn_predict(neighbour_labels: np.ndarray) -> np.ndarray:
    """Majority label per row; among tied labels, the one ranked nearest wins."""
    nl = np.asarray(neighbour_labels)
    k = nl.shape[1]
    votes = (nl[:, :, None] == nl[:, None, :]).sum(-1)         # votes[i, j]: how many share j's label
    score = votes * (k + 1) - np.arange(k)[None, :]            # more votes first, then nearer
    return nl[np.arange(len(nl)), score.argmax(1)]


def reference_metrics(vectors: np.ndarray, labels: Sequence, ks: Sequence[int], knn_k: int = 20) -> Metrics:
    """Slow and obvious: per query, sort all others by distance and count. For tests."""
    x = np.asarray(vectors, dtype=np.float64)
    labels = np.asarray(labels)
    n = len(x)
    precision = {str(k): [] for k in ks}
    recall = {str(k): [] for k in ks}
    rprec, aps, correct = [], [], 0
    for i in range(n):
        d = ((x - x[i]) ** 2).sum(1)
        others = [j for j in np.argsort(d, kind="stable") if j != i]
        same = [labels[j] == labels[i] for j in others]
        R = sum(1 for j in range(n) if j != i and labels[j] == labels[i])
        top = [labels[j] for j in others[:knn_k]]
        best = None
        for lab in top:  # first (nearest) label with the maximal count
            if best is None or top.count(lab) > top.count(best):
                best = lab
        correct += best == labels[i]
        if R == 0:
            continue
        for k in ks:
            precision[str(k)].append(sum(same[:k]) / k)
            recall[str(k)].append(float(any(same[:k])))
        rprec.append(sum(same[:R]) / R)
        hits, ap = 0, 0.0
        for rank in range(1, R + 1):
            if same[rank - 1]:
                hits += 1
                ap += hits / rank
        aps.append(ap / R)
    return Metrics(n=n, n_queries=len(rprec), precision={k: float(np.mean(v)) for k, v in precision.items()},
                   recall={k: float(np.mean(v)) for k, v in recall.items()}, r_precision=float(np.mean(rprec)),
                   map_at_r=float(np.mean(aps)), knn_top1=correct / n)


def compare_with_milvus(exact: Neighbours, query_rows: Sequence[int], milvus_hits: List[List[Dict]], ids: np.ndarray,
                        rtol: float = 1e-3, atol: float = 1e-4) -> Tuple[int, List[Dict]]:
    """How many Milvus neighbour lists equal the exact ones, ties aside; and the disagreements."""
    agree, bad = 0, []
    for row, hits in zip(query_rows, milvus_hits):
        k = len(hits)
        want_ids = ids[exact.index[row, :k]].tolist()
        want_d = exact.distance[row, :k]
        got_ids = [h["id"] for h in hits]
        got_d = np.array([h["distance"] for h in hits], dtype=np.float64)
        same = got_ids == want_ids
        # a swap between equidistant items is a tie, not an error
        ties_only = len(got_d) == len(want_d) and np.allclose(got_d, want_d, rtol=rtol, atol=atol * max(1.0, float(want_d.max(initial=0))))
        if same or ties_only:
            agree += 1
        else:
            bad.append({"query_id": int(ids[row]), "milvus": got_ids, "exact": want_ids})
    return agree, bad
