"""The retrieval metrics against oracles, on many small random inputs.

Two oracles: a float64 brute force written here from the protocol's definitions (one query at a time, no
shared code with ``indexer.evaluation.metrics``), and pytorch-metric-learning's AccuracyCalculator. Inputs are
drawn by hypothesis: a handful of points on a small integer grid (exact distances, so ties and duplicate
vectors are common), a few classes (singletons included), and every k from 1 to beyond the number of other
images (precision@k still divides by k there: a 6-image split has P@10 <= 5/10).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from support.oracles import pml_oracle

from indexer.evaluation.exact import ExactSearch, Neighbours
from indexer.evaluation.metrics import encode_labels, needed_k, retrieval_metrics

BOUNDED = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def grid_points(draw, max_n: int = 12):
    """(float32 vectors on a small integer grid, labels, ks, knn_k): ties and duplicates by construction."""
    n = draw(st.integers(2, max_n))
    dim = draw(st.integers(1, 3))
    x = draw(hnp.arrays(np.int8, (n, dim), elements=st.integers(-2, 2))).astype(np.float32)
    n_classes = draw(st.integers(1, 4))
    labels = draw(hnp.arrays(np.int64, n, elements=st.integers(0, n_classes - 1)))
    ks = sorted(draw(st.lists(st.integers(1, n + 4), min_size=1, max_size=4, unique=True)))
    knn_k = draw(st.integers(1, n + 4))
    return x, encode_labels(labels), ks, knn_k


def true_distances(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def brute_force(order, labels, ks, knn_k):
    """The protocol's definitions, one query at a time; ``order[i]`` is every other row, nearest first.

    Returns per-query values: precision/hit/R-precision/AP for queries with R > 0, kNN correctness for all."""
    labels = [int(v) for v in labels]
    out = {
        "valid": [],
        "precision": {k: [] for k in ks},
        "hit": {k: [] for k in ks},
        "r_precision": [],
        "ap": [],
        "knn": [],
    }
    for i, others in enumerate(order):
        others = [int(j) for j in others]
        rel = [labels[j] == labels[i] for j in others]
        top = [labels[j] for j in others[:knn_k]]
        # majority label among the knn_k nearest; among tied labels, the one that comes first
        best = max(dict.fromkeys(top), key=lambda lab: (top.count(lab), -top.index(lab)))
        out["knn"].append(best == labels[i])
        r = labels.count(labels[i]) - 1
        out["valid"].append(r > 0)
        if r == 0:
            continue
        for k in ks:
            out["precision"][k].append(sum(rel[:k]) / k)  # k, not min(k, candidates)
            out["hit"][k].append(any(rel[:k]))
        out["r_precision"].append(sum(rel[:r]) / r)
        out["ap"].append(sum(sum(rel[: pos + 1]) / (pos + 1) for pos in range(r) if rel[pos]) / r)
    return out


def assert_metrics_equal(m, oracle, ks):
    pq = m.per_query
    assert pq.valid.tolist() == oracle["valid"]
    assert m.n_queries == sum(oracle["valid"]) and m.n == len(oracle["valid"])
    for k in ks:
        np.testing.assert_allclose(
            pq.precision[str(k)], oracle["precision"][k], rtol=0, atol=1e-12, err_msg=f"precision@{k}"
        )
        assert pq.hit[str(k)].tolist() == oracle["hit"][k], f"hit@{k}"
        want_p = np.mean(oracle["precision"][k]) if oracle["precision"][k] else np.nan
        want_r = np.mean(oracle["hit"][k]) if oracle["hit"][k] else np.nan
        np.testing.assert_allclose(m.precision[str(k)], want_p, atol=1e-12, err_msg=f"mean precision@{k}")
        np.testing.assert_allclose(m.recall[str(k)], want_r, atol=1e-12, err_msg=f"mean recall@{k}")
    np.testing.assert_allclose(pq.r_precision, oracle["r_precision"], atol=1e-12, err_msg="R-precision")
    np.testing.assert_allclose(pq.ap_at_r, oracle["ap"], atol=1e-12, err_msg="AP@R")
    np.testing.assert_allclose(m.map_at_r, np.mean(oracle["ap"]) if oracle["ap"] else np.nan, atol=1e-12)
    assert pq.knn_correct.tolist() == oracle["knn"], "kNN votes"
    assert m.knn_top1 == pytest.approx(np.mean(oracle["knn"]), abs=1e-12)


def _searched_k(labels, ks, knn_k) -> int:
    """The list length the evaluation asks for (as evaluate_runs does), capped at the other images."""
    return min(needed_k(labels, ks, knn_k), len(labels) - 1)


@BOUNDED
@given(data=grid_points(), tie_break=st.randoms(use_true_random=False))
@example(data=(np.arange(6, dtype=np.float32)[:, None], np.zeros(6, np.int64), [1, 5, 10], 20), tie_break=None)
def test_metrics_of_any_neighbour_order_equal_the_definitions(data, tie_break):
    """retrieval_metrics on nearest-first lists whose ties are broken at random equals the brute force on them."""
    x, labels, ks, knn_k = data
    n = len(x)
    d = true_distances(x)
    np.fill_diagonal(d, np.inf)
    jitter = np.arange(n, dtype=np.float64) if tie_break is None else np.array(tie_break.sample(range(n), n), float)
    order = np.array([[j for j in np.lexsort((jitter, d[i])) if j != i] for i in range(n)], np.int64)
    k = _searched_k(labels, ks, knn_k)
    neigh = Neighbours(order[:, :k], np.take_along_axis(d, order[:, :k], 1).astype(np.float32))
    m = retrieval_metrics(neigh, labels, ks, knn_k)
    assert_metrics_equal(m, brute_force(order, labels, ks, knn_k), ks)


@BOUNDED
@given(data=grid_points())
def test_exact_neighbours_and_metrics_equal_a_float64_brute_force(data):
    """The whole exact path (float32 matrix products, float64 re-ranking) on points with ties and duplicates:
    every list is a true nearest-first order of the other rows, and the metrics equal the brute force on it."""
    x, labels, ks, knn_k = data
    n = len(x)
    k = _searched_k(labels, ks, knn_k)
    got = ExactSearch(x).leave_one_out(k)
    assert got.index.shape == (n, k)
    d = true_distances(x)
    for i in range(n):
        row = got.index[i].tolist()
        assert i not in row and len(set(row)) == k, f"row {i}: self or a repeat in {row}"
        want = np.sort(np.delete(d[i], i))[:k]
        np.testing.assert_allclose(d[i, row], want, rtol=0, atol=1e-9, err_msg=f"row {i} is not nearest-first")
        np.testing.assert_allclose(got.distance[i], want, rtol=1e-6, atol=1e-5)
    m = retrieval_metrics(got, labels, ks, knn_k)
    assert_metrics_equal(m, brute_force(got.index, labels, ks, knn_k), ks)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(4, 40), n_classes=st.integers(1, 6), dim=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_p1_r_precision_map_at_r_equal_pytorch_metric_learning(n, n_classes, dim, seed):
    """On continuous random points (no ties), P@1, R-precision and MAP@R equal the independent library's."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    labels[:2] = labels[0]  # at least one query with R > 0
    x = (rng.normal(size=(n, dim)) + labels[:, None] * 0.5).astype(np.float32)
    codes = encode_labels(labels)
    m = retrieval_metrics(ExactSearch(x).leave_one_out(_searched_k(codes, (1,), 1)), codes, (1,), 1)
    oracle = pml_oracle(x, codes)
    assert m.precision["1"] == pytest.approx(oracle["precision_at_1"], abs=1e-6)
    assert m.r_precision == pytest.approx(oracle["r_precision"], abs=1e-6)
    assert m.map_at_r == pytest.approx(oracle["mean_average_precision_at_r"], abs=1e-6)
