"""The pure logic of approximate indexes: index specs, sweeps, recall, the ranking rule, the cheapest setting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.evaluation.ann import (
    AnnDocument,
    ExactFigures,
    ModelPoint,
    OperatingPoint,
    cheapest,
    conclusions,
    merged,
    model_order,
    precision_at,
    query_rows,
    ranking_holds,
    recall_at_k,
)
from indexer.evaluation.document import Interval, from_plain, to_plain
from indexer.evaluation.exact import ExactSearch
from indexer.evaluation.metrics import true_neighbours
from indexer.index_spec import (
    IndexSpec,
    IndexSpecError,
    at_least_limit,
    default_m,
    lite_note,
    make_index_spec,
    parse_sweep,
)


def test_spec_takes_milvus_defaults_and_checks_names_and_ranges():
    spec = make_index_spec("hnsw", ["M=16"])
    assert spec.index_type == "HNSW" and spec.params == {"M": 16, "efConstruction": 360}
    assert spec.label == "HNSW (M=16, efConstruction=360)"
    assert make_index_spec("IVF_FLAT").params == {"nlist": 128}
    assert make_index_spec("FLAT").label == "FLAT" and make_index_spec("FLAT").exact
    with pytest.raises(IndexSpecError, match="no build parameter 'ef'"):
        make_index_spec("HNSW", ["ef=16"])  # ef is a search parameter, not a build one
    with pytest.raises(IndexSpecError, match="out of Milvus' range"):
        make_index_spec("IVF_PQ", ["nbits=17"])
    with pytest.raises(IndexSpecError, match="whole number"):
        make_index_spec("HNSW", ["M=sixteen"])
    with pytest.raises(IndexSpecError, match="unknown index type"):
        make_index_spec("ANNOY")


@pytest.mark.parametrize("dim", [384, 768, 1280, 2048, 1000, 7])
def test_ivf_pq_m_divides_the_dimension(dim):
    m = default_m(dim)
    assert dim % m == 0 and m <= max(1, dim // 16)
    assert make_index_spec("IVF_PQ", dim=dim).params["m"] == m
    with pytest.raises(IndexSpecError, match="must divide"):
        make_index_spec("IVF_PQ", ["m=3"], dim=1280)


def test_search_params_default_and_never_below_the_limit():
    hnsw = make_index_spec("HNSW", search=["ef=32"])
    assert hnsw.search_params() == {"ef": 32}
    assert hnsw.search_params(8, k=11) == {"ef": 11}  # Milvus refuses ef < k
    assert make_index_spec("IVF_FLAT").search_params(1, k=11) == {"nprobe": 1}  # nprobe has no such bound
    assert IndexSpec().search_params() == {}
    assert at_least_limit({"search_list": 5, "nprobe": 2}, 10) == {"search_list": 10, "nprobe": 2}
    with pytest.raises(IndexSpecError, match="searches with ef"):
        make_index_spec("HNSW", search=["nprobe=4"])


def test_sweep_parsing():
    assert parse_sweep("ef=64, 16,32,16", "HNSW").values == (16, 32, 64)
    assert parse_sweep("nprobe=1,8", "IVF_PQ").param == "nprobe"
    with pytest.raises(IndexSpecError, match="swept over nprobe"):
        parse_sweep("ef=16", "IVF_FLAT")
    with pytest.raises(IndexSpecError, match="no search parameter"):
        parse_sweep("ef=16", "FLAT")
    with pytest.raises(IndexSpecError, match="NAME=VALUE"):
        parse_sweep("16,32", "HNSW")
    with pytest.raises(IndexSpecError, match="out of Milvus' range"):
        parse_sweep("nprobe=0", "IVF_FLAT")


def test_lite_accepts_some_types_with_a_note_and_refuses_others():
    assert lite_note(IndexSpec()) is None
    note = lite_note(make_index_spec("HNSW"))
    assert note is not None and "exactly" in note and "--uri http://" in note
    for refused in ("IVF_PQ", "DISKANN"):
        with pytest.raises(IndexSpecError, match=f"cannot build {refused}"):
            lite_note(make_index_spec(refused))


def test_spec_round_trips_through_collection_metadata():
    from benchmarks.synthetic import synthetic_meta
    from indexer.milvus_store import CollectionMeta

    meta = synthetic_meta("m", 64, "d", "/data")
    meta.index = make_index_spec("IVF_PQ", ["nlist=64"], dim=64, search=["nprobe=4"])
    back = CollectionMeta.from_json(meta.to_json())
    assert back.index == meta.index and back.identity == meta.identity
    legacy = json.loads(meta.to_json())
    del legacy["index"]
    legacy["index_type"] = "FLAT"  # a collection built before the index was a spec
    assert CollectionMeta.from_json(json.dumps(legacy)).index == IndexSpec()


def test_recall_and_precision_against_a_hand_count():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    found = [[3, 9, 1], [7, 8]]  # 2 of 3 exact; none, and a short list
    assert recall_at_k(found, exact, k=3).tolist() == pytest.approx([2 / 3, 0.0])
    labels = np.array([[0, 0, 1], [2, -1, -1]])
    assert precision_at(labels, np.array([0, 2]), 3).tolist() == pytest.approx([2 / 3, 1 / 3])
    with pytest.raises(ValueError):
        recall_at_k(found[:1], exact)


def test_exact_neighbours_of_some_rows_equal_float64_truth():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 48)).astype(np.float32)
    rows = np.array([5, 17, 399, 0])
    got = ExactSearch(x).leave_one_out(10, rows=rows)
    truth = true_neighbours(x, rows, 10)
    assert np.array_equal(got.index, truth.index)
    full = ExactSearch(x).leave_one_out(10)
    assert np.array_equal(full.index[rows], got.index)


def test_query_rows_are_seeded_and_have_a_class_mate():
    labels = np.array([0, 0, 1, 2, 2, 2, 3])
    rows = query_rows(labels, 10, seed=1)
    assert set(rows.tolist()) == {0, 1, 3, 4, 5}  # classes 1 and 3 have a single image
    assert np.array_equal(query_rows(np.arange(50) % 5, 7, 4), query_rows(np.arange(50) % 5, 7, 4))


def _iv(v: float) -> Interval:
    return Interval(v, v, v, 100)


def _point(index: str, value: int, figures: dict) -> OperatingPoint:
    """An operating point from {model: (recall, p@10, p50 ms)}."""
    models = [
        ModelPoint(m, _iv(r), _iv(p), _iv(p), _iv(0), _iv(0), ms, ms * 2, 1000 / ms)
        for m, (r, p, ms) in figures.items()
    ]
    kind = index.split(" ")[0]
    indexed = {m: p for m, (_, p, _) in figures.items()}
    return OperatingPoint(index, kind, {"ef": value} if kind != "FLAT" else {}, models, model_order(indexed), True)


def test_ranking_rule():
    exact = {"a": 0.60, "b": 0.55, "c": 0.70}
    assert model_order(exact) == ["c", "a", "b"]
    assert ranking_holds(exact, {"a": 0.5, "b": 0.4, "c": 0.65})
    assert not ranking_holds(exact, {"a": 0.5, "b": 0.52, "c": 0.65})
    assert model_order({"x": 0.5, "a": 0.5}) == ["a", "x"]  # ties in name order, the same every time


def test_cheapest_setting_every_model_must_reach_the_target():
    pts = [
        _point("FLAT", 0, {"a": (1.0, 0.5, 1.0), "b": (1.0, 0.4, 1.0)}),
        _point("HNSW (M=16)", 16, {"a": (0.995, 0.5, 0.2), "b": (0.97, 0.4, 0.2)}),  # b misses
        _point("HNSW (M=16)", 64, {"a": (0.999, 0.5, 0.5), "b": (0.992, 0.4, 0.6)}),
        _point("HNSW (M=16)", 128, {"a": (1.0, 0.5, 0.7), "b": (0.999, 0.4, 0.9)}),
    ]
    best = cheapest(pts)
    assert best is not None and best.search == {"ef": 64}
    assert cheapest(pts, target=0.9995) is None or cheapest(pts, target=0.9995).search == {"ef": 128}
    assert cheapest(pts[:2]) is None  # FLAT is the reference, never the answer


def _doc(points, models=("a", "b")) -> AnnDocument:
    exact = [ExactFigures(m, f"c_{m}", 100, 8, _iv(0.5), _iv(0.5 - 0.1 * i)) for i, m in enumerate(models)]
    return AnnDocument("d", "val", "Milvus at x", 100, 10, 10, 0, 100, 0.99, exact, [], points, list(models))


def test_conclusions_and_merge_of_runs():
    hnsw = _point("HNSW (M=16)", 64, {"a": (0.999, 0.5, 0.5), "b": (0.992, 0.4, 0.6)})
    ivf = _point("IVF_FLAT (nlist=128)", 8, {"a": (0.95, 0.3, 0.3), "b": (0.96, 0.4, 0.3)})
    ivf.ranking_holds = False
    flat = _point("FLAT", 0, {"a": (1.0, 0.5, 1.0), "b": (1.0, 0.4, 1.0)})
    first, second = _doc([flat, hnsw]), _doc([flat, ivf])
    both = merged(second, first)
    assert [p.index for p in both.points] == ["FLAT", "HNSW (M=16)", "IVF_FLAT (nlist=128)"]
    text = " ".join(conclusions(both))
    assert "HNSW (M=16): the order by P@10 holds" in text and "IVF_FLAT (nlist=128): the order by P@10 differs" in text
    assert "Cheapest setting with recall@10 >= 0.99 for every model: HNSW (M=16) @ ef=64" in text
    other = _doc([flat, ivf], models=("a", "c"))
    assert merged(other, first).points == other.points  # other models: replaced, not merged
    assert from_plain(AnnDocument, json.loads(json.dumps(to_plain(both)))) == both


def test_one_model_has_no_order_to_keep():
    flat = _point("FLAT", 0, {"a": (1.0, 0.5, 1.0)})
    hnsw = _point("HNSW (M=16)", 64, {"a": (0.999, 0.5, 0.5)})
    text = conclusions(_doc([flat, hnsw], models=("a",)))
    assert text[0] == "One model measured (a): there is no order of models to keep."
    assert not any("order by P@10" in s for s in text) and text[-1].endswith("lowest recall@10 0.9990).")


def test_report_files_are_written_and_runs_merge(tmp_path):
    from indexer.evaluation.ann import read_ann, write_ann_report
    from indexer.evaluation.report import ann_beside

    flat = _point("FLAT", 0, {"a": (1.0, 0.5, 1.0), "b": (1.0, 0.4, 1.0)})
    hnsw = _point("HNSW (M=16)", 64, {"a": (0.999, 0.5, 0.5), "b": (0.992, 0.4, 0.6)})
    ivf = _point("IVF_FLAT (nlist=128)", 8, {"a": (0.95, 0.5, 0.3), "b": (0.96, 0.4, 0.3)})
    write_ann_report(_doc([flat, hnsw]), tmp_path)
    write_ann_report(_doc([flat, ivf]), tmp_path)
    back = read_ann(tmp_path)
    assert back is not None and [p.index_type for p in back.points] == ["FLAT", "HNSW", "IVF_FLAT"]
    md = (tmp_path / "ann.md").read_text()
    assert "HNSW (M=16) @ ef=64" in md and "IVF_FLAT (nlist=128) @ ef=8" in md and "ann_pareto.png" in md
    assert (tmp_path / "ann_pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert ann_beside(tmp_path) == back  # what the comparison report in the same folder shows as section 10
    (tmp_path / "ann.json").write_text(json.dumps({"schema_version": 0}))
    assert ann_beside(tmp_path) is None  # another schema: left out with a warning, the report still written


def test_evaluation_page_shows_the_ann_section(tmp_path, monkeypatch):
    import sys

    from streamlit.testing.v1 import AppTest
    from support.data import REPO

    from app.navigation import EVALUATION_FILE
    from indexer.evaluation.ann import write_ann_report

    flat = _point("FLAT", 0, {"a": (1.0, 0.5, 1.0), "b": (1.0, 0.4, 1.0)})
    hnsw = _point("HNSW (M=16)", 64, {"a": (0.999, 0.5, 0.5), "b": (0.992, 0.4, 0.6)})
    folder = tmp_path / "report"
    doc = write_ann_report(_doc([flat, hnsw]), folder)  # no comparison report in the folder: the section alone
    monkeypatch.setattr(sys, "argv", ["page.py", "--uri", str(tmp_path / "milvus.db"), "--report-dir", str(folder)])
    at = AppTest.from_file(str(REPO / "app" / EVALUATION_FILE), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Approximate index: does the ranking survive it?" in [h.value for h in at.header]
    shown = " ".join(m.value for m in at.markdown)
    assert all(s in shown for s in doc.sentences)
    assert any("HNSW (M=16) @ ef=64" in t.value.to_string() for t in at.table)
