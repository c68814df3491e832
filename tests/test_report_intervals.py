"""The report's intervals are the percentile-bootstrap intervals at the level the report prints.

A small report (two synthetic models in Milvus Lite, a DINO holdout) is built by the product; every interval
in report.md and report.json is then recomputed with ``scipy.stats.bootstrap(method="percentile")`` at the level,
resamples and seed that report.md itself states. The project's bootstrap draws its resamples exactly as scipy
does for a seeded generator (``rng.integers(0, n, (resamples, n))``), so the intervals must agree to rounding,
not just statistically: the interval labelled 95% is the 2.5/97.5 percentile interval of those draws.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import stats as sps
from support.reports import synthetic_report

RESAMPLES, SEED = 400, 7


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return synthetic_report(tmp_path_factory.mktemp("report_intervals"), RESAMPLES, SEED)


def _per_query_columns(run):
    """Each reported metric's per-query values, taken from the evaluation's per-query arrays."""
    pq = run.per_query
    cols = {f"P@{k}": np.asarray(v, float) for k, v in pq.precision.items()}
    cols.update({f"R@{k}": np.asarray(v, float) for k, v in pq.hit.items()})
    cols.update(
        {
            "R-precision": np.asarray(pq.r_precision, float),
            "MAP@R": np.asarray(pq.ap_at_r, float),
            "kNN@20": pq.knn_correct.astype(float),
            "DINO kNN top-1": run.dino_correct.astype(float),
        }
    )
    return cols


def _scipy(values, level: float, resamples: int, seed: int):
    ci = sps.bootstrap(
        (values,),
        np.mean,
        n_resamples=resamples,
        method="percentile",
        confidence_level=level,
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return float(ci.low), float(ci.high)


def _md_table(md: str, heading: str):
    """(header cells, rows of cells) of the first table after the heading that matches ``heading``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if re.search(heading, line))
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    table = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip().strip("|").split("|")])
    return table[0], table[2:]


def _shows(cell: str, *values: float, decimals: int = 4) -> bool:
    """Whether the numbers printed in ``cell`` are ``values`` rounded to ``decimals`` (either way at a tie)."""
    printed = [float(v) for v in re.findall(r"[-+]?\d+\.\d+", cell)]
    half = 0.5 * 10**-decimals + 1e-12
    return len(printed) == len(values) and all(abs(p - v) <= half for p, v in zip(printed, values))


def _stated(md: str):
    """(level, resamples, seed) as report.md states them, and the level in the heading of part 1."""
    m = re.search(r"percentile bootstrap over queries, (\d+(?:\.\d+)?)%, (\d+) resamples, seed (\d+)", md)
    assert m, "report.md does not say how its intervals were made"
    heading = re.search(r"^## 1\. Every metric with its (\d+(?:\.\d+)?)% confidence interval$", md, re.M)
    assert heading, "part 1's heading does not state the interval's level"
    assert heading.group(1) == m.group(1), "two different levels are printed"
    return float(m.group(1)) / 100, int(m.group(2)), int(m.group(3))


def test_every_metric_interval_is_scipys_percentile_interval_at_the_printed_level(report):
    md, doc = report["md"], report["doc"]
    level, resamples, seed = _stated(md)
    assert (resamples, seed) == (RESAMPLES, SEED), "the report states other resamples or seed than it was given"
    head, rows = _md_table(md, r"^## 1\. ")
    by_model = {r[0]: dict(zip(head, r)) for r in rows}
    checked = 0
    for run in report["runs"]:
        label = f"{run.model} ({run.features})"
        (intervals,) = [mi for mi in doc.intervals if (mi.model, mi.features) == (run.model, run.features)]
        for name, values in _per_query_columns(run).items():
            low, high = _scipy(values, level, resamples, seed)
            got = intervals.get(name)
            assert got.mean == pytest.approx(values.mean(), abs=1e-12), (label, name)
            assert (got.low, got.high) == pytest.approx((low, high), rel=1e-12, abs=1e-12), (
                f"{label} {name}: [{got.low}, {got.high}] is not the {level:.0%} percentile interval [{low}, {high}]"
            )
            assert got.n == len(values) and got.level == level
            # a metric over other queries than the row's names its count in the header: "(95% CI, 24 queries)"
            column = next((h for h in head if h.startswith(f"{name} ({level:.0%} CI")), None)
            if column is not None:
                assert _shows(by_model[label][column], values.mean(), low, high), (label, name, by_model[label][column])
                checked += 1
    assert checked == 2 * 7, "every cell of part 1 was compared"


def test_paired_differences_and_their_sentences_use_the_printed_level(report):
    md, doc = report["md"], report["doc"]
    level, resamples, seed = _stated(md)
    head, rows = _md_table(md, r"^## 2\. Paired differences")
    ci_col = next(h for h in head if "paired bootstrap" in h)
    assert ci_col == f"{level * 100:g}% CI (paired bootstrap)"
    a, b = report["runs"]
    pairs = {
        "P@1": (a.per_query.hit["1"].astype(float), b.per_query.hit["1"].astype(float)),
        "P@10": (a.per_query.precision["10"], b.per_query.precision["10"]),
        "MAP@R": (a.per_query.ap_at_r, b.per_query.ap_at_r),
    }
    (pair,) = doc.pairs
    md_rows = {r[1]: dict(zip(head, r)) for r in rows}
    for metric, (va, vb) in pairs.items():
        diff = np.asarray(va, float) - np.asarray(vb, float)
        low, high = _scipy(diff, level, resamples, seed)
        got = next(m.difference for m in pair.metrics if m.metric == metric)
        assert (got.low, got.high) == pytest.approx((low, high), rel=1e-12, abs=1e-12), metric
        assert _shows(md_rows[metric][ci_col], low, high), (metric, md_rows[metric][ci_col])
        sentence = next(s for s in pair.sentences if f" on {metric} " in s)
        m = re.search(r"\((\d+(?:\.\d+)?)% CI ([-+]?\d\.\d{3}) to ([-+]?\d\.\d{3})", sentence)
        assert m and float(m.group(1)) / 100 == level, sentence
        printed = f"{m.group(2)} {m.group(3)}"
        assert _shows(printed, low, high, decimals=3) or _shows(printed, -high, -low, decimals=3), (sentence, low, high)


def test_dino_table_states_its_level_and_holds_scipys_interval(report):
    md = report["md"]
    level, resamples, seed = _stated(md)
    head, rows = _md_table(md, r"^## 6\. DINO-style kNN")
    assert head[1] == f"top-1 ({level * 100:g}% CI)"
    cells = {r[0]: r[1] for r in rows}
    for run in report["runs"]:
        values = run.dino_correct.astype(float)
        low, high = _scipy(values, level, resamples, seed)
        assert _shows(cells[run.model], values.mean(), low, high), (run.model, cells[run.model])


SINGLETONS = 5


@pytest.fixture(scope="module")
def report_with_singletons(tmp_path_factory):
    return synthetic_report(tmp_path_factory.mktemp("report_counts"), RESAMPLES, SEED, singletons=SINGLETONS)


def _shown_count(head, row, column: str) -> int:
    """The query count a cell of part 1 is printed under: its own "(N queries)", else its header's, else the row's."""
    for text in (row[head.index(column)], column):
        own = re.search(r"(\d+) queries\)", text)
        if own:
            return int(own.group(1))
    return int(row[head.index("queries")])


def test_every_count_in_part_1_and_the_means_table_is_the_queries_its_metric_used(report_with_singletons):
    from indexer.evaluation.sections import results_table

    md, runs = report_with_singletons["md"], report_with_singletons["runs"]
    head, rows = _md_table(md, r"^## 1\. ")
    by_model = {r[0]: r for r in rows}
    level = f"{_stated(md)[0]:.0%}"
    counts_seen = set()
    for run in runs:
        row = by_model[f"{run.model} ({run.features})"]
        for name, values in _per_query_columns(run).items():
            column = next((h for h in head if h.startswith(f"{name} ({level} CI")), None)
            if column is None:  # R@1, P@5...: computed, not a column of part 1
                continue
            assert _shown_count(head, row, column) == len(values), (run.model, name, column, row)
            counts_seen.add(len(values))
    # three different counts really are printed: ranking queries, every image (kNN@20), the holdout (DINO)
    assert len(counts_seen) == 3, counts_seen

    table = results_table(report_with_singletons["evaluation"])
    for run, cells in zip(runs, table.rows):
        shown = dict(zip(table.headers, cells))
        assert int(shown["queries"]) == len(run.per_query.ap_at_r) == int(shown["images"]) - SINGLETONS
        assert int(shown["images"]) == len(run.per_query.knn_correct)
    assert "kNN@20 (all images)" in table.headers
