"""One rule for "significant" per robustness measure, and sentences that agree with their intervals (issue 39,
item 6): binary measures by the exact McNemar test, with the interval that test inverts; the others by the
paired-bootstrap interval."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from indexer.evaluation.query_transforms import CLEAN, Condition
from indexer.evaluation.robustness import (
    BINARY_MEASURES,
    Outcome,
    RobustnessResult,
    Timing,
    family_sentences,
    protocol,
    summarise,
)
from indexer.evaluation.robustness_tables import pair_table, protocol_text

N = 200
BLUR = Condition("blur", 3, "sigma_px", 3.0)


def _outcome(rank1: np.ndarray, seed: int) -> Outcome:
    rng = np.random.default_rng(seed)
    rank = np.where(rank1, 1, rng.integers(2, 500, N))
    return Outcome(rank=rank, top=rng.integers(0, 1000, (N, 10)), cosine=rng.uniform(0.2, 0.9, N))


def _summarised(only_a: int, only_b: int, both: int, confidence: float = 0.95):
    a = np.zeros(N, bool)
    b = np.zeros(N, bool)
    a[:only_a] = True
    b[only_a : only_a + only_b] = True
    a[-both:] = b[-both:] = True
    outcomes = {
        ("a", CLEAN): _outcome(np.ones(N, bool), 0),
        ("b", CLEAN): _outcome(np.ones(N, bool), 1),
        ("a", BLUR): _outcome(a, 2),
        ("b", BLUR): _outcome(b, 3),
    }
    return summarise(outcomes, ["a", "b"], [BLUR], None, np.arange(N), resamples=2000, seed=0, confidence=confidence)


def test_a_binary_difference_the_mcnemar_test_rejects_not_is_no_significant_difference_within_its_interval():
    """9 queries only a keeps at rank 1, 2 only b: McNemar p = 0.065, while a bootstrap interval of the
    difference (+0.035) excludes zero; the sentence said "no significant difference" beside that interval."""
    records, pairs = _summarised(9, 2, 4)
    [copy_r1] = [p for p in pairs if p.family == "blur" and p.measure == "copy_r1"]
    assert copy_r1.mcnemar is not None and 0.05 < copy_r1.mcnemar.p_value < 0.07
    assert not copy_r1.significant and not copy_r1.difference.excludes_zero(), copy_r1.difference
    [sentence] = [s for s in family_sentences(records, pairs) if s.startswith("Blurred")]
    assert "no significant difference" in sentence
    low = copy_r1.difference.low
    assert f"95% CI {low:+.3f}" in sentence and low <= 0, sentence


def test_every_pair_agrees_with_its_interval_and_the_rule_is_stated():
    for only_a, only_b in ((0, 0), (3, 0), (9, 2), (12, 2), (20, 5), (5, 20), (40, 38)):
        _, pairs = _summarised(only_a, only_b, 4)
        for p in pairs:
            assert p.significant == p.difference.excludes_zero(), (only_a, only_b, p.measure, p.difference)
            if p.measure in BINARY_MEASURES:
                assert p.mcnemar is not None and p.significant == (p.mcnemar.p_value < 0.05)
                assert abs(p.difference.mean - (p.a_mean - p.b_mean)) < 1e-12
    rule = protocol()["significance"]
    assert "exact McNemar" in rule and "copy_r1" in rule and "excludes zero" in rule


def test_the_commands_last_line_names_every_file_it_wrote(tmp_path, monkeypatch, capsys):
    """The robustness itself is the toy one of test_robustness (two cheap encoders, 40 images): what is checked
    here is what the command writes and says, into a folder that already holds a comparison report."""
    import shutil

    from support.reports import synthetic_report
    from test_robustness import toy_result

    from indexer import cli
    from indexer.evaluation import robustness

    synthetic_report(tmp_path / "comparison", resamples=200, seed=0)
    folder = tmp_path / "report"
    shutil.copytree(tmp_path / "comparison" / "rep", folder)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    monkeypatch.setattr(robustness, "evaluate_collections", lambda store, cfg: toy_result(tmp_path))
    monkeypatch.setattr(cli, "_store", lambda args, create=False: None)
    import indexer.catalog

    monkeypatch.setattr(indexer.catalog, "find_collection", lambda *a: None)  # for the labels line only
    monkeypatch.setattr(cli, "_labels_line", lambda store, coll: "labelled (toy)")
    code = cli.main(["robustness", "--split", "val", "--models", "histogram,pixels", "--report", str(folder)])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    written = sorted(p.name for p in folder.iterdir() if before.get(p.name) != p.stat().st_mtime_ns)
    assert len(written) >= 8 + 2 + 3, written  # the PNGs, robustness.json/.md, report.json/md/html
    assert last.startswith(f"wrote {len(written)} files: {folder / written[0]}") or last.startswith(
        f"wrote {len(written)} files: {folder}/"
    ), last
    named = last.split(": ", 1)[1].split(", ")
    assert sorted(Path(n).name for n in named) == written, (named, written)


def _document(confidence: float) -> dict:
    """robustness.json of a two-model run on the blur condition whose intervals are at ``confidence``."""
    records, pairs = _summarised(20, 5, 4, confidence)
    result = RobustnessResult(
        ["a", "b"], "toy", "val", False, list(range(N)), [BLUR], records, pairs,
        family_sentences(records, pairs), Timing(), resamples=2000, confidence=confidence,
    )  # fmt: skip
    return result.to_json()


def test_the_protocol_and_the_tables_name_the_confidence_the_intervals_were_computed_at():
    doc = _document(0.9)
    assert doc["confidence"] == 0.9
    stats, rule = doc["protocol"]["statistics"], doc["protocol"]["significance"]
    assert stats.startswith("90% percentile bootstrap") and "95%" not in stats, stats
    assert "p < 0.1," in rule and "its 90% interval" in rule and "paired-bootstrap 90% interval" in rule, rule
    assert "95%" not in rule
    assert "90% percentile bootstrap" in protocol_text(doc)
    assert pair_table(doc, "copy_r1")[0][4] == "90% CI (exact McNemar)"  # a binary measure: McNemar's interval
    assert pair_table(doc, "cosine")[0][4] == "90% CI (paired bootstrap)"
    assert any("90% CI" in sentence for sentence in doc["sentences"]), doc["sentences"]
    default = _document(0.95)
    assert default["protocol"]["statistics"].startswith("95% percentile bootstrap")
    assert "p < 0.05," in default["protocol"]["significance"]
    assert pair_table(default, "copy_r1")[0][4] == "95% CI (exact McNemar)"
    # the intervals themselves are at the stated level: a 90% interval lies inside the 95% one
    for narrow, wide in zip(doc["pairs"], default["pairs"]):
        assert wide["ci"][0] <= narrow["ci"][0] <= narrow["ci"][1] <= wide["ci"][1], (narrow, wide)
