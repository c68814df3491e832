"""Uncertainty for per-query metrics: seeded percentile bootstrap, paired differences, exact McNemar.

Every retrieval metric here is a mean over queries, so resampling queries with replacement gives its
sampling distribution (the queries are the random sample; the database is fixed). Paired differences
resample the same queries for both models, which removes the between-query variance the two share.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from indexer.evaluation.document import CONFIDENCE, Interval, McNemar

DEFAULT_RESAMPLES = 2000


def bootstrap_means(
    values: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, batch: int = 100
) -> np.ndarray:
    """(n_resamples, m) means of resampled rows of ``values`` (n,) or (n, m); all columns share the resamples."""
    v = np.asarray(values, dtype=np.float64)
    v2 = v[:, None] if v.ndim == 1 else v
    n = len(v2)
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples, v2.shape[1]))
    for start in range(0, n_resamples, batch):
        b = min(batch, n_resamples - start)
        idx = rng.integers(0, n, size=(b, n))  # batches keep memory at batch x n indices
        out[start : start + b] = v2[idx].mean(1)
    return out


def bootstrap_ci(
    values: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE
) -> Interval:
    """Mean of ``values`` with its percentile-bootstrap interval (as ``scipy.stats.bootstrap(method='percentile')``)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, confidence)
    low, high = percentile_interval(bootstrap_means(v, n_resamples, seed)[:, 0], confidence)
    return Interval(float(v.mean()), float(low), float(high), len(v), confidence)


def column_intervals(
    values: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE
) -> List[Interval]:
    """The mean of each column of ``values`` (n, m) with its percentile-bootstrap interval, every column from the
    same resamples of the rows (queries), so that intervals of measures on the same queries are comparable."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return [Interval(float("nan"), float("nan"), float("nan"), 0, confidence) for _ in range(v.shape[1])]
    low, high = percentile_interval(bootstrap_means(v, n_resamples, seed), confidence)
    return [
        Interval(float(v[:, j].mean()), float(low[j]), float(high[j]), len(v), confidence) for j in range(v.shape[1])
    ]


def percentile_interval(means: np.ndarray, confidence: float = CONFIDENCE) -> Tuple[np.ndarray, np.ndarray]:
    """(low, high) percentile interval of bootstrap means (n_resamples,) or (n_resamples, m), per column."""
    alpha = (1 - confidence) / 2
    low, high = np.percentile(means, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return low, high


def paired_difference(
    a: np.ndarray, b: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE
) -> Interval:
    """mean(a) - mean(b) over the same queries, with a paired-bootstrap interval (queries resampled jointly)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same queries: {a.shape} vs {b.shape}")
    return bootstrap_ci(a - b, n_resamples, seed, confidence)


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemar:
    """Exact McNemar test: under 'no difference' each discordant query is a fair coin."""
    from scipy.stats import binomtest

    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return McNemar(only_a, only_b, int((a & b).sum()), int((~a & ~b).sum()), p)


def mcnemar_difference(test: McNemar, confidence: float = CONFIDENCE) -> Interval:
    """The paired difference of two rates (A − B, over every query) with the interval the exact McNemar test
    inverts: Clopper-Pearson for the share of discordant queries A alone gets right, scaled to the difference.
    It excludes zero exactly when the test's p-value is below 1 − ``confidence``, so a sentence that reports
    both can never contradict itself (a bootstrap interval can exclude zero while p = 0.12)."""
    from scipy.stats import binomtest

    n = test.only_a + test.only_b + test.both + test.neither
    discordant = test.only_a + test.only_b
    mean = (test.only_a - test.only_b) / n if n else 0.0
    if discordant == 0:
        return Interval(mean, 0.0, 0.0, n, confidence)
    ci = binomtest(test.only_a, discordant, 0.5).proportion_ci(confidence, method="exact")
    scale = discordant / n
    return Interval(mean, scale * (2 * ci.low - 1), scale * (2 * ci.high - 1), n, confidence)


def compare_sentence(
    a: str, b: str, metric: str, diff: Interval, p_value: Optional[float] = None, better: str = "retrieves better than"
) -> str:
    """One plain sentence: which model is ahead on ``metric`` and by how much, or no significant difference."""
    ci = diff.words(signed=True)
    p = f", p = {p_value:.2g}" if p_value is not None else ""
    if not diff.excludes_zero() or (p_value is not None and p_value >= 0.05):
        return f"No significant difference between {a} and {b} on {metric} ({a} − {b} = {diff.mean:+.3f}, {ci}{p})."
    if diff.mean > 0:
        return f"{a} {better} {b} on {metric} by {diff.mean:.3f} ({ci}{p})."
    return f"{b} {better} {a} on {metric} by {-diff.mean:.3f} ({diff.words(signed=True, negate=True)}{p})."
