"""Exact search in NumPy: the ground truth that the evaluation's cross-checks and the robustness evaluation rank by.

``ExactSearch.search(queries, k, exclude)`` has the shape of ``VectorStore.search`` (queries, k, the row each query
leaves out), over vectors held in memory instead of a collection, and answers rows, not ids. Squared L2 in float64
(|q|^2 + |x|^2 - 2 q.x: about 1e-12 relative error at these norms, far below the 1e-6 that separates ties); ties are
ordered by row. The whole-split leave-one-out lists of ``indexer evaluate`` come from ``metrics.exact_neighbours``
(torch, float32 with a float64 re-ranking of the head, on the GPU when there is one), checked against this.
"""

from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np
import numpy.typing as npt

SEARCH_BUDGET = 256 << 20  # bytes of float64 distances per block of queries
DATABASE_BLOCK = 8192  # database rows converted to float64 at a time


class ExactSearch:
    """Exact squared-L2 nearest rows of ``vectors`` for any queries, in blocks of ``budget`` bytes of distances."""

    def __init__(self, vectors: np.ndarray, budget: int = SEARCH_BUDGET):
        self.vectors = vectors
        self.budget = budget
        self._norms = np.concatenate(
            [
                (np.asarray(vectors[s : s + DATABASE_BLOCK], np.float64) ** 2).sum(1)
                for s in range(0, len(vectors), DATABASE_BLOCK)
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
