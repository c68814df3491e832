"""Exact search: the one place nearest neighbours are computed outside Milvus, with two backends.

``ExactSearch.search(queries, k, exclude)`` has the shape of ``VectorStore.search`` (queries, k, the row each query
leaves out), over vectors held in memory instead of a collection, and answers rows, not ids. Squared L2 in float64
NumPy (|q|^2 + |x|^2 - 2 q.x: about 1e-12 relative error at these norms, far below the 1e-6 that separates ties); ties
are ordered by row: the ground truth of the evaluation's cross-checks (``metrics.true_neighbours``) and the ranks and
lists of the robustness evaluation.

``ExactSearch.leave_one_out(k)`` is the whole-split lists of ``indexer evaluate`` (every row against all the others:
metrics, descriptors, label-free measures, the ANN recall's truth): torch, float32 in query chunks sized to a memory
budget, on the GPU when there is one, the head of each list re-ranked in float64; tests check it against ``search``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Tuple

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

SEARCH_BUDGET = 256 << 20  # bytes of float64 distances per block of queries
DATABASE_BLOCK = 8192  # database rows converted to float64 at a time
LEAVE_ONE_OUT_BUDGET = 1 << 30  # bytes of float32 distances (and their working copies) per chunk of queries
REFINE_TOP = 16  # the first 16 neighbours are ordered by float64 distances (P@1, P@10, the Milvus check)
REFINE_MARGIN = 8  # float32 candidates beyond them that may move up


@dataclass
class Neighbours:
    index: np.ndarray  # (N, K) int64, nearest first, self excluded
    distance: np.ndarray  # (N, K) float32 squared L2


class ExactSearch:
    """Exact squared-L2 nearest rows of ``vectors`` for any queries, in blocks of ``budget`` bytes of distances."""

    def __init__(self, vectors: np.ndarray, budget: int = SEARCH_BUDGET):
        self.vectors = vectors
        self.budget = budget

    @functools.cached_property
    def _norms(self) -> np.ndarray:
        """float64 |x|^2 of every row, computed on the first ``search`` (``leave_one_out`` has its own)."""
        return np.concatenate(
            [
                (np.asarray(self.vectors[s : s + DATABASE_BLOCK], np.float64) ** 2).sum(1)
                for s in range(0, len(self.vectors), DATABASE_BLOCK)
            ]
            or [np.zeros(0)]
        )

    def __len__(self) -> int:
        return len(self.vectors)

    def _distances(self, queries: np.ndarray) -> Iterator[Tuple[int, np.ndarray]]:
        """(first query, its block's (b, N) squared distances), blocks of at most ``budget`` bytes."""
        q = np.asarray(queries, np.float64)
        n = len(self)
        step = max(1, self.budget // max(1, n * 8))
        for s in range(0, len(q), step):
            qb = q[s : s + step]
            d = np.empty((len(qb), n), np.float64)
            for start in range(0, n, DATABASE_BLOCK):
                x = np.asarray(self.vectors[start : start + DATABASE_BLOCK], np.float64)
                d[:, start : start + len(x)] = self._norms[None, start : start + len(x)] - 2.0 * (qb @ x.T)
            d += (qb * qb).sum(1)[:, None]
            np.maximum(d, 0, out=d)
            yield s, d

    def search(
        self, queries: np.ndarray, k: int, exclude: Optional[npt.ArrayLike] = None
    ) -> Tuple[np.ndarray, np.ndarray]:
        """(rows (n, k) int64, squared distances (n, k) float64) of each query's k nearest rows, nearest first, ties
        by row; ``exclude[i]``: the row query i leaves out (itself, or the image it was made from)."""
        return self.ranked_search(queries, k, exclude)[1:]

    def ranked_search(
        self, queries: np.ndarray, k: int, exclude: Optional[npt.ArrayLike] = None
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``search``, and first the rank of each query's excluded row among all rows (1 = nearest): one more than
        the rows strictly nearer, so that an exact tie does not push it down (0 when nothing is excluded)."""
        n, total = len(queries), len(self)
        left_out = None if exclude is None else np.asarray(exclude, np.int64)
        k = min(k, total - (0 if left_out is None else 1))
        rank = np.zeros(n, np.int64)
        rows_out = np.empty((n, k), np.int64)
        dist_out = np.empty((n, k), np.float64)
        for s, d in self._distances(queries):
            b = np.arange(len(d))
            if left_out is not None:
                own = left_out[s : s + len(d)]
                rank[s : s + len(d)] = 1 + (d < d[b, own][:, None]).sum(1)
                d[b, own] = np.inf
            part = np.argpartition(d, k - 1, axis=1)[:, :k] if 0 < k < total else np.tile(np.arange(total), (len(d), 1))
            pd = np.take_along_axis(d, part, 1)
            order = np.lexsort((part, pd), axis=1)[:, :k]  # nearest first, ties by row
            rows_out[s : s + len(d)] = np.take_along_axis(part, order, 1)
            dist_out[s : s + len(d)] = np.take_along_axis(pd, order, 1)
        return rank, rows_out, dist_out

    def leave_one_out(
        self,
        k: int,
        rows: Optional[npt.ArrayLike] = None,
        device: str = "cpu",
        chunk: Optional[int] = None,
        memory_budget: int = LEAVE_ONE_OUT_BUDGET,
        progress: bool = False,
    ) -> Neighbours:
        """Exact k nearest other rows of every row (or of ``rows`` only: row j of the result is ``rows[j]``'s), in
        torch on ``device``, in query chunks of ``chunk`` rows (default: sized to ``memory_budget`` bytes)."""
        import torch
        from tqdm import tqdm

        n, _ = self.vectors.shape
        k = min(k, n - 1)
        queries = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        dev = torch.device(device)
        original = torch.from_numpy(np.ascontiguousarray(self.vectors, dtype=np.float32)).to(dev)
        # L2 distances do not change under translation; centring shrinks |q|^2 + |x|^2 - 2 q.x cancellation
        # (the float64 re-ranking uses the original vectors: centring in float32 rounds them)
        x = original - original.mean(0, keepdim=True)
        sq = (x * x).sum(1)
        chunk = chunk or max(1, min(len(queries), memory_budget // max(1, n * 4 * 3)))
        out_i = np.empty((len(queries), k), np.int64)
        out_d = np.empty((len(queries), k), np.float32)
        with torch.inference_mode():
            for start in tqdm(range(0, len(queries), chunk), disable=not progress, desc="exact kNN", unit="chunk"):
                stop = min(start + chunk, len(queries))
                own = torch.from_numpy(queries[start:stop]).to(dev)
                q = x[own]
                d = torch.addmm(sq[None, :], q, x.T, alpha=-2.0).add_(sq[own, None]).clamp_(min=0)
                d[torch.arange(stop - start, device=dev), own] = math.inf
                vals, idx = torch.topk(d, min(k + REFINE_MARGIN, n - 1), dim=1, largest=False, sorted=True)
                _refine(original, own, idx, vals)
                out_i[start:stop] = idx[:, :k].cpu().numpy()
                out_d[start:stop] = vals[:, :k].cpu().numpy()
        return Neighbours(out_i, out_d)


def _refine(
    x: "torch.Tensor", own: "torch.Tensor", idx: "torch.Tensor", vals: "torch.Tensor", rows_per_step: int = 256
) -> None:
    """Re-rank the first REFINE_TOP + REFINE_MARGIN float32 candidates (in place) by float64 |q - x|^2.

    The float32 expansion |q|^2 + |x|^2 - 2 q.x loses about 1e-7 of |q|^2 + |x|^2, which can swap
    neighbours whose distances differ by more than float32 rounding of the distance itself (seen on
    Tiny-ImageNet: 1 list in 200). The direct float64 difference does not. Only the head is re-ranked:
    doing all k costs several times the matrix product; positions past REFINE_TOP keep float32 order."""
    import torch

    r = min(REFINE_TOP + REFINE_MARGIN, idx.shape[1])
    for s in range(0, len(idx), rows_per_step):
        cand = idx[s : s + rows_per_step, :r]
        q = x[own[s : s + len(cand)]].double()
        d = ((x[cand].double() - q[:, None, :]) ** 2).sum(-1)
        d, order = torch.sort(d, dim=1, stable=True)
        idx[s : s + len(cand), :r] = torch.gather(cand, 1, order)
        vals[s : s + len(cand), :r] = d.float()
