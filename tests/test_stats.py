"""Bootstrap intervals, paired differences and the exact McNemar test, against scipy on known cases."""

import numpy as np
import pytest
from scipy import stats as sps

from indexer.evaluation.stats import bootstrap_ci, column_intervals, compare_sentence, mcnemar_exact, paired_difference


@pytest.mark.parametrize("seed", [0, 1])
def test_bootstrap_interval_matches_scipy_percentile(seed):
    x = np.random.default_rng(seed).exponential(2.0, 400)  # skewed: the percentile interval is asymmetric
    ours = bootstrap_ci(x, n_resamples=4000, seed=seed)
    ref = sps.bootstrap(
        (x,),
        np.mean,
        n_resamples=4000,
        method="percentile",
        confidence_level=0.95,
        random_state=np.random.default_rng(seed + 10),
    ).confidence_interval
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert ours.mean == pytest.approx(x.mean())
    # two Monte-Carlo estimates of the same quantiles: within a small fraction of the standard error
    assert ours.low == pytest.approx(ref.low, abs=0.15 * se)
    assert ours.high == pytest.approx(ref.high, abs=0.15 * se)
    assert ours.low < x.mean() < ours.high


def test_bootstrap_is_seeded_and_covers_normal_theory():
    x = np.random.default_rng(3).normal(0.3, 1.0, 2000)
    a, b = bootstrap_ci(x, seed=7), bootstrap_ci(x, seed=7)
    assert (a.low, a.high) == (b.low, b.high)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert a.high - a.low == pytest.approx(2 * half, rel=0.1)


def test_column_intervals_share_the_resamples_and_take_the_confidence_asked():
    """The robustness measures' intervals: one set of resamples for every column, each column's interval the one
    bootstrap_ci gives it alone, at the confidence asked (narrower at 80% than at 95%)."""
    rng = np.random.default_rng(5)
    matrix = np.stack([rng.exponential(1.0, 300), rng.uniform(0, 1, 300) > 0.4], 1).astype(np.float64)
    wide = column_intervals(matrix, n_resamples=1000, seed=2)
    for j, interval in enumerate(wide):
        alone = bootstrap_ci(matrix[:, j], n_resamples=1000, seed=2)
        assert (interval.mean, interval.low, interval.high) == pytest.approx(
            (alone.mean, alone.low, alone.high), rel=1e-12
        )
        assert interval.level == 0.95 and interval.n == 300
    narrow = column_intervals(matrix, n_resamples=1000, seed=2, confidence=0.8)
    for a, b in zip(narrow, wide):
        assert a.level == 0.8 and a.mean == b.mean and b.low < a.low < a.mean < a.high < b.high
        assert a.words().startswith("80% CI ")


def test_paired_difference_removes_shared_variance():
    rng = np.random.default_rng(0)
    query_difficulty = rng.uniform(0, 1, 1000)
    a = np.clip(query_difficulty + 0.03 + rng.normal(0, 0.02, 1000), 0, 1)
    b = np.clip(query_difficulty + rng.normal(0, 0.02, 1000), 0, 1)
    paired = paired_difference(a, b, seed=1)
    unpaired_width = 2 * 1.96 * np.sqrt(a.var() / 1000 + b.var() / 1000)
    assert paired.excludes_zero() and paired.mean == pytest.approx(a.mean() - b.mean())
    assert paired.high - paired.low < unpaired_width / 5
    ref = sps.bootstrap(
        (a, b),
        lambda u, v, axis: u.mean(axis) - v.mean(axis),
        paired=True,
        n_resamples=2000,
        method="percentile",
        random_state=np.random.default_rng(5),
    ).confidence_interval
    assert paired.low == pytest.approx(ref.low, abs=0.002) and paired.high == pytest.approx(ref.high, abs=0.002)
    with pytest.raises(ValueError, match="same queries"):
        paired_difference(a, b[:-1])


def test_mcnemar_exact_on_known_tables():
    # 2x2 table both=50, only_a=12, only_b=3, neither=35: p = two-sided binomial(3; 15, 0.5)
    a = np.array([1] * 50 + [1] * 12 + [0] * 3 + [0] * 35, bool)
    b = np.array([1] * 50 + [0] * 12 + [1] * 3 + [0] * 35, bool)
    t = mcnemar_exact(a, b)
    assert (t.both, t.only_a, t.only_b, t.neither) == (50, 12, 3, 35)
    expected = 2 * sps.binom.cdf(3, 15, 0.5)
    assert t.p_value == pytest.approx(expected) and t.p_value == pytest.approx(0.03515625)
    assert mcnemar_exact(a, a).p_value == 1.0  # no discordant queries
    assert mcnemar_exact(b, a).p_value == pytest.approx(t.p_value)


def test_sentences_say_who_is_ahead_or_no_difference():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, 500), rng.uniform(0, 1, 500)
    same = compare_sentence("A", "B", "P@10", paired_difference(a, a + rng.normal(0, 1e-3, 500)))
    assert same.startswith("No significant difference between A and B on P@10")
    ahead = compare_sentence("A", "B", "P@10", paired_difference(b + 0.2, b))
    assert ahead.startswith("A retrieves better than B on P@10 by 0.200 (95% CI +0.200 to +0.200")
    behind = compare_sentence("A", "B", "P@10", paired_difference(b, b + 0.1))
    assert behind.startswith("B retrieves better than A on P@10 by 0.100")
    not_significant = compare_sentence("A", "B", "P@1", paired_difference(b + 0.2, b), p_value=0.2)
    assert not_significant.startswith("No significant difference")
