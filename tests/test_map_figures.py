"""The two figures under every map, on cases small enough to work out by hand (definitions in maps.py's docstring).

Trustworthiness@k (Venna and Kaski; scikit-learn's definition):
T(k) = 1 - 2 / (n k (2n - 3k - 1)) * sum over points i, over the map's k nearest j that are not among i's k
nearest in the original space, of (r(i, j) - k), r the rank in the original space. Silhouette of a point:
(b - a) / max(a, b), a its mean distance to its own class, b to the nearest other class, in the ORIGINAL space.
"""

from __future__ import annotations

import numpy as np
import pytest

from indexer.evaluation.maps import MapParams, map_quality

# gaps 1, 2, 4, 8, 16: no two distances from one point are equal, so every rank is unambiguous
LINE = np.array([0, 1, 3, 7, 15, 31], float)


def column(values) -> np.ndarray:
    return np.asarray(values, np.float32)[:, None] * np.ones((1, 2), np.float32)


def test_trustworthiness_counts_the_maps_false_neighbours_by_their_original_rank():
    # the map keeps the order but puts point 5 beside point 0: at k = 1, points 0 and 5 each get the other as
    # nearest neighbour, 5th in the original space, (5 - 1) each; every other nearest neighbour is the original's
    coords = np.stack([np.array([0, 1, 3, 7, 15, -0.5]), np.zeros(6)], 1).astype(np.float32)
    q = map_quality(column(LINE), coords, ["a"] * 3 + ["b"] * 3, MapParams(method="pca", trust_k=1))
    assert q.trust_k == 1 and q.trust_points == 6
    n, k = 6, 1
    assert q.trustworthiness == pytest.approx(1 - 2 / (n * k * (2 * n - 3 * k - 1)) * (4 + 4), abs=1e-12)  # 2/3


def test_a_map_that_keeps_every_neighbourhood_is_fully_trustworthy():
    mirrored = np.stack([-LINE, np.zeros(6)], 1).astype(np.float32)  # every distance the same
    q = map_quality(column(LINE), mirrored, ["a"] * 3 + ["b"] * 3, MapParams(method="pca", trust_k=2))
    assert q.trust_k == 2 and q.trustworthiness == 1.0


def test_the_silhouette_is_the_original_spaces_whatever_the_map():
    x = column([0, 2, 10, 14])
    classes = ["A", "A", "B", "B"]
    # by hand: s(0) = (12 - 2) / 12, s(2) = (10 - 2) / 10, s(10) = (9 - 4) / 9, s(14) = (13 - 4) / 13
    s = np.array([10 / 12, 8 / 10, 5 / 9, 9 / 13])
    # a map that mixes the classes completely: its own silhouette would be negative
    mixed = np.array([[0, 0], [10, 0], [1, 0], [11, 0]], np.float32)
    q = map_quality(x, mixed, classes, MapParams(method="pca"))
    assert q.silhouette == pytest.approx(s.mean(), abs=1e-6) and q.silhouette_points == 4
    per_class = {c.class_id: (c.silhouette, c.n) for c in q.per_class}
    assert per_class.keys() == {"A", "B"}
    assert per_class["A"] == (pytest.approx(s[:2].mean(), abs=1e-6), 2)
    assert per_class["B"] == (pytest.approx(s[2:].mean(), abs=1e-6), 2)
