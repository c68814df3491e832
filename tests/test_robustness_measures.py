"""Each figure the robustness report prints, on a case small enough to work out by hand.

Twelve database rows on a line, (x, 1) with x = 0, 1, ..., 10 and 20, rows 0-5 of class 0 and 6-11 of class 1;
queries are rows 0, 1 and 6. With 12 rows, a query's 10 nearest other images are all but the original and the
farthest of the other 11, so every list below is "all but one row". The query vectors of each condition are
chosen (tests/support/robustness.py): the evaluation's own pipeline transforms, embeds, searches and summarises.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from support.robustness import hand_run

from indexer.evaluation.query_transforms import CLEAN, FAMILIES, chosen_levels, conditions_for, parse_families
from indexer.evaluation.robustness import family_sentences

X = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20], float)
DATABASE = np.stack([X, np.ones_like(X)], 1)
LABELS = np.array([0] * 6 + [1] * 6)
QUERY_ROWS = np.array([0, 1, 6])

FLIP, TRANSLATION, SECOND_SHIFT = conditions_for(parse_families("flip,translation"), 1)
assert (FLIP.family, TRANSLATION.draw, SECOND_SHIFT.draw) == ("flip", 0, 1)


def line(*xs):
    return np.array([[x, 1.0] for x in xs])


# the clean queries are their own rows; each transformed query's vector is chosen
HAND = {
    CLEAN: DATABASE[QUERY_ROWS],
    # row 0 at 12.2: 11 rows nearer (rank 12), list 2..11; row 1 at 10.2: rows 2..10 nearer (rank 10), list
    # 2..11; row 6 at 6.3: nearest is itself (rank 1), list as clean
    FLIP: line(12.2, 10.2, 6.3),
    # two shifts of each query: row 0 -> 2.2 and 2.4 (nearest other: row 2 both times, lists 1..10 both);
    # row 1 -> 3.4 and 4.4 (rows 3 and 4; lists 0, 2..10 both); row 6 -> 9.6 and 10.6 (row 10 both; lists
    # without row 11, then without row 0)
    TRANSLATION: line(2.2, 3.4, 9.6),
    SECOND_SHIFT: line(2.4, 4.4, 10.6),
}
# a model whose every transformed query is its clean one
STEADY = {c: DATABASE[QUERY_ROWS] for c in HAND}


@pytest.fixture(scope="module")
def run():
    records, pairs = hand_run(
        {"hand": DATABASE, "steady": DATABASE}, {"hand": HAND, "steady": STEADY}, QUERY_ROWS, LABELS
    )
    return records, pairs


def figures(records, model, family):
    """The record as the report JSON gives it."""
    [doc] = [r.to_json() for r in records if r.model == model and r.family == family]
    return doc


def test_copy_retrieval_is_the_rank_of_the_original_among_all_rows(run):
    flip = figures(run[0], "hand", "flip")
    # ranks 12, 10 and 1
    assert flip["copy_r1"] == pytest.approx(1 / 3, abs=1e-12)
    assert flip["copy_r10"] == pytest.approx(2 / 3, abs=1e-12)
    assert flip["copy_mrr"] == pytest.approx((1 / 12 + 1 / 10 + 1) / 3, abs=1e-12)
    # the shifts leave 4 rows nearer than each original: rank 5 for all three
    shift = figures(run[0], "hand", "translation")
    assert (shift["copy_r1"], shift["copy_r10"]) == (0.0, 1.0)
    assert shift["copy_mrr"] == pytest.approx(1 / 5, abs=1e-12)


def test_class_p10_is_the_transformed_querys_and_its_baseline_the_clean_querys(run):
    flip = figures(run[0], "hand", "flip")
    # flipped, rows 0 and 1 list rows 2..11 (4 of class 0), row 6 lists 0..5, 7..10 (4 of class 1)
    assert flip["class_p10"] == pytest.approx(0.4, abs=1e-12)
    # clean, rows 0 and 1 list all but row 11 (5 of class 0 each), row 6 likewise (4 of class 1)
    assert flip["clean_p10"] == pytest.approx((0.5 + 0.5 + 0.4) / 3, abs=1e-12)
    assert flip["class_p10_change"] == pytest.approx(0.4 - 1.4 / 3, abs=1e-12)


def test_the_clean_baseline_is_the_same_clean_queries_under_every_family(run):
    """The clean P@10 beside each family comes from the untransformed queries: the same for every family, and
    for a model whose transformed queries differ (hand) as for one whose do not (steady)."""
    records = run[0]
    for model in ("hand", "steady"):
        for family in ("flip", "translation"):
            assert figures(records, model, family)["clean_p10"] == pytest.approx(1.4 / 3, abs=1e-12), (model, family)
    # steady's transformed queries are the clean ones: its class P@10 is the baseline itself
    assert figures(records, "steady", "flip")["class_p10"] == pytest.approx(1.4 / 3, abs=1e-12)


def test_cosine_is_between_the_clean_and_the_transformed_embedding(run):
    flip = figures(run[0], "hand", "flip")
    by_hand = [
        (0 * 12.2 + 1) / (1 * np.sqrt(12.2**2 + 1)),
        (1 * 10.2 + 1) / (np.sqrt(2) * np.sqrt(10.2**2 + 1)),
        (6 * 6.3 + 1) / (np.sqrt(37) * np.sqrt(6.3**2 + 1)),
    ]
    assert flip["cosine"] == pytest.approx(np.mean(by_hand), abs=1e-9)
    assert figures(run[0], "steady", "flip")["cosine"] == pytest.approx(1.0, abs=1e-12)


def test_jaccard10_compares_the_clean_querys_list_with_the_transformed_querys(run):
    flip = figures(run[0], "hand", "flip")
    # rows 0 and 1: 9 rows shared of 11 seen; row 6: the same list
    assert flip["jaccard10"] == pytest.approx((9 / 11 + 9 / 11 + 1) / 3, abs=1e-12)
    assert figures(run[0], "steady", "flip")["jaccard10"] == 1.0


def test_shift_consistency_compares_the_two_shifts_of_each_query(run):
    shift = figures(run[0], "hand", "translation")
    # same nearest other image for rows 0 and 6, not for row 1; lists equal but for row 6 (9 of 11)
    assert shift["shift_top1"] == pytest.approx(2 / 3, abs=1e-12)
    assert shift["shift_jaccard10"] == pytest.approx((1 + 1 + 9 / 11) / 3, abs=1e-12)
    # a family measured once has no shift consistency
    assert "shift_top1" not in figures(run[0], "hand", "flip")
    assert chosen_levels(FAMILIES["translation"], 1) == [TRANSLATION.level]


def test_every_measure_has_an_interval_around_its_mean(run):
    for r in run[0]:
        doc = r.to_json()
        for measure, (low, high) in doc["ci"].items():
            assert low <= doc[measure] + 1e-12 and doc[measure] <= high + 1e-12, (r.model, r.family, measure)


@pytest.mark.parametrize("order", [("hand", "steady"), ("steady", "hand")])
def test_a_sentence_gives_the_leaders_difference_with_its_own_sign(order):
    """steady keeps every flipped original at rank 1, hand one of three: steady minus hand is +2/3 per query
    [1, 1, 0] whichever model the comparison lists first, inside its interval."""
    models = {"hand": HAND, "steady": STEADY}
    records, pairs = hand_run({m: DATABASE for m in order}, {m: models[m] for m in order}, QUERY_ROWS, LABELS)
    [flip] = [s for s in family_sentences(records, pairs) if s.startswith("Flipped")]
    assert flip.startswith("Flipped horizontally, steady and hand keep the original at rank 1 about as often")
    assert "1.000 vs 0.333, difference +0.667 (95% CI " in flip
    low, high = map(float, re.search(r"95% CI ([-+][\d.]+) to ([-+][\d.]+)", flip).groups())
    assert -1 <= low <= 2 / 3 <= high <= 1, flip
    # copy_r1 is binary: its interval is the one the exact McNemar test inverts, so it excludes zero exactly when
    # the sentence calls the difference significant (2 discordant queries of 3: p = 0.5, not significant)
    assert (low > 0) == ("no significant difference" not in flip) and "p = 0.5" in flip, flip
    # two discordant queries, both for steady: exact McNemar p = 2 * (1/2)^2
    assert "exact McNemar p = 0.5)" in flip
