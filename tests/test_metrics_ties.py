"""kNN top-1 ties: among labels with equal votes the one ranked nearest wins.

Every case here has a different answer when ties go to the farthest label (by its nearest or its
farthest occurrence), so a reversed tie-break cannot pass.
"""

import numpy as np
import pytest

from indexer.evaluation.exact import ExactSearch
from indexer.evaluation.metrics import encode_labels, knn_predict, retrieval_metrics


@pytest.mark.parametrize(
    "neighbour_labels,nearest_wins",
    [
        ([1, 2, 1, 2], 1),  # 2 votes each; 1 is nearer at every rank
        ([1, 2, 3], 1),  # one vote each
        ([4, 4, 1, 2, 1, 2], 4),  # three labels with 2 votes
        ([7, 3, 3, 7, 5, 5], 7),  # 7 first and last: the tie-break looks at the nearest occurrence
        ([9, 1, 2, 1, 2], 1),  # the nearest label (9) has fewer votes: votes first, then distance
    ],
)
def test_tie_goes_to_the_nearest_label(neighbour_labels, nearest_wins):
    assert knn_predict(np.array([neighbour_labels])).tolist() == [nearest_wins]


def test_ties_in_a_batch_are_broken_row_by_row():
    rows = np.array([[1, 2, 1, 2], [2, 1, 2, 1], [3, 3, 1, 1]])
    assert knn_predict(rows).tolist() == [1, 2, 3]


def test_knn_top1_on_points_with_tied_votes():
    # on a line: a(0) a(1) b(3); with k = 2 every query sees one vote of each label
    #   query 0: neighbours 1 (a, d=1), 2 (b, d=3)  -> a, correct
    #   query 1: neighbours 0 (a, d=1), 2 (b, d=2)  -> a, correct
    #   query 2: neighbours 1 (a, d=2), 0 (a, d=3)  -> a, wrong (no tie)
    # nearest-first: 2/3; farthest-first would give 0/3
    x = np.array([[0.0], [1.0], [3.0]], np.float32)
    labels = ["a", "a", "b"]
    codes = encode_labels(labels)
    m = retrieval_metrics(ExactSearch(x).leave_one_out(2), codes, ks=(1,), knn_k=2)
    assert m.knn_top1 == pytest.approx(2 / 3)
