"""One comparison of vector sets (VectorSetIdentity.compare and .digest), asked by every consumer.

A real build of the test network, then a real rebuild (``--force``) that changes only the decode mode or only the
precision: the report becomes stale (also on the Evaluation page), the cached map and the cached robustness
embeddings are recomputed, and a query embedder loaded for the first build refuses the rebuilt rows (the app loads
a new one). Each of these follows from ``compare`` / ``digest`` alone: leaving the field out of them fails them all.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.builds import MODEL, extract_config
from support.data import REPO, make_tiny_layout

from embed.common.identity import VectorSetIdentity
from indexer.build import build
from indexer.milvus_store import CollectionMeta, VectorStore

REBUILDS = {"decode": ("workers", "device"), "precision": ("fp32", "bf16")}


@dataclass
class Rebuilt:
    field: str
    uri: str
    root: Path
    embeddings: Path
    report_dir: Path
    collection: str
    before: CollectionMeta
    after: CollectionMeta
    query: object  # the QueryEmbedder loaded for the first build
    first_robustness: object  # the robustness run on the first build (its timing)


def _robustness(uri: str, embeddings: Path):
    from indexer.evaluation.robustness import RobustnessConfig, evaluate_collections

    cfg = RobustnessConfig(
        split="val",
        models=[MODEL],
        embeddings=embeddings,
        queries=6,
        families=["flip"],
        severities=1,
        resamples=20,
        device="cpu",
        progress=False,
    )
    store = VectorStore(uri)
    try:
        return evaluate_collections(store, cfg)
    finally:
        store.close()


@pytest.fixture(scope="module", params=sorted(REBUILDS))
def rebuilt(request, tmp_path_factory) -> Rebuilt:
    from indexer.evaluation.evaluate import EvalConfig, evaluate_runs
    from indexer.evaluation.maps import MapParams, compute_map
    from indexer.evaluation.report import ReportConfig, build_report
    from indexer.query_embedding import QueryEmbedder

    field = request.param
    first, second = REBUILDS[field]
    base = tmp_path_factory.mktemp(f"rebuilt_{field}")
    root = make_tiny_layout(base / "tiny", n_per_class=4, classes=("n01440764", "n01443537", "n01484850"))
    uri, emb, report_dir = str(base / "milvus.db"), base / "emb", base / "report"
    settings = {"decode": "workers", "precision": "fp32", "device": "cpu"}
    store = VectorStore(uri)
    name = build(extract_config(root, emb, **settings), store, progress=False).collection
    before = store.meta(name)
    assert before is not None and getattr(before.identity, field) == first
    cfg = EvalConfig(split="val", dataset="tiny", models=[MODEL], ks=(1, 5), features=("raw",), device="cpu")
    evaluation, runs = evaluate_runs(cfg, store)
    build_report(evaluation, runs, ReportConfig(out=report_dir, resamples=50, galleries=0, style_queries=0))
    assert not compute_map(store, name, MapParams(method="pca"), report_dir, progress=False).cached
    store.close()
    first_robustness = _robustness(uri, emb)
    query = QueryEmbedder.for_collection(before, device="cpu")

    store = VectorStore(uri)
    build(extract_config(root, emb, **{**settings, field: second}, force=True), store, progress=False)
    after = store.meta(name)
    store.close()
    assert after is not None and after.rows == before.rows and after.complete
    return Rebuilt(field, uri, root, emb, report_dir, name, before, after, query, first_robustness)


def test_the_rebuild_differs_in_that_field_alone(rebuilt):
    same = rebuilt.before.identity.compare(rebuilt.after.identity)
    assert not same.interchangeable and same.fields == (rebuilt.field,)
    first, second = REBUILDS[rebuilt.field]
    assert same.words() == f"{rebuilt.field}: stored {first!r}, now {second!r}"
    assert rebuilt.before.identity.compare(rebuilt.before.identity).interchangeable
    assert rebuilt.before.identity.digest("v1") != rebuilt.after.identity.digest("v1")
    assert rebuilt.before.identity.digest("v1") != rebuilt.before.identity.digest("v2"), "the consumer's version"
    again = VectorSetIdentity.from_dict(rebuilt.before.identity.to_dict())
    assert again.digest("v1") == rebuilt.before.identity.digest("v1"), "stable across a round trip"


def test_the_report_is_stale_after_the_rebuild(rebuilt, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app.navigation import EVALUATION_FILE
    from indexer.evaluation.document import ReportDocument

    doc = ReportDocument.from_json((rebuilt.report_dir / "report.json").read_text())
    assert doc.changed_collections({rebuilt.collection: rebuilt.before}) == [], "current before the rebuild"
    first, second = REBUILDS[rebuilt.field]
    assert doc.changed_collections({rebuilt.collection: rebuilt.after}) == [
        f"{MODEL} was rebuilt and makes its vectors otherwise ({rebuilt.field}: evaluated {first!r}, now {second!r})."
    ]
    # the Evaluation page reads the rebuilt collection from the database and says so
    argv = ["page.py", "--uri", rebuilt.uri, "--report-dir", str(rebuilt.report_dir), "--split", "val"]
    monkeypatch.setattr(sys, "argv", argv)
    at = AppTest.from_file(str(REPO / "app" / EVALUATION_FILE), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("This report predates the collections as they are now") for w in warnings), warnings
    assert any(f"{rebuilt.field}: evaluated {first!r}, now {second!r}" in w for w in warnings), warnings


def test_the_cached_map_is_recomputed_after_the_rebuild(rebuilt):
    from indexer.evaluation.maps import MapParams, available_params, compute_map, load_map

    params = MapParams(method="pca")
    assert load_map(rebuilt.report_dir, rebuilt.collection, rebuilt.before, params) is not None, "cached before"
    assert load_map(rebuilt.report_dir, rebuilt.collection, rebuilt.after, params) is None
    assert available_params(rebuilt.report_dir, {rebuilt.collection: rebuilt.after}) == []
    store = VectorStore(rebuilt.uri)
    try:
        again = compute_map(store, rebuilt.collection, params, rebuilt.report_dir, progress=False)
    finally:
        store.close()
    assert not again.cached and again.identity == rebuilt.after.identity


def test_the_cached_robustness_embeddings_are_recomputed_after_the_rebuild(rebuilt):
    first = rebuilt.first_robustness.timing
    assert first.embedded[MODEL] > 0 and first.from_cache.get(MODEL, 0) == 0
    again = _robustness(rebuilt.uri, rebuilt.embeddings).timing
    assert again.embedded[MODEL] == first.embedded[MODEL], "every query embedded again, as the rebuilt rows are"
    assert again.from_cache.get(MODEL, 0) == 0
    cached = _robustness(rebuilt.uri, rebuilt.embeddings).timing
    assert cached.embedded.get(MODEL, 0) == 0 and cached.from_cache[MODEL] > 0, "then cached under the new identity"


def test_the_query_embedder_refuses_the_rebuilt_rows_and_the_app_loads_another(rebuilt):
    from app.backend import AppSettings, Backend
    from indexer.query_embedding import QueryEmbedderMismatch

    query = rebuilt.query
    query.check()  # made for the first build: its rows are embedded the same way
    assert query.serves(rebuilt.before) and not query.serves(rebuilt.after)
    first, second = REBUILDS[rebuilt.field]
    with pytest.raises(QueryEmbedderMismatch, match=f"{rebuilt.field}: collection '{second}', queries '{first}'"):
        query.check(rebuilt.after)
    backend = Backend(AppSettings(uri=rebuilt.uri, data_root=str(rebuilt.root), split="val"))
    try:
        backend._embedders[MODEL] = query  # as the app had loaded it before the rebuild
        assert not backend.has_embedder(MODEL), "it no longer serves the collection"
        loaded = backend.embedder(MODEL)
        assert loaded is not query and loaded.serves(rebuilt.after) and backend.has_embedder(MODEL)
        assert getattr(loaded.identity, rebuilt.field) == second
    finally:
        backend.store.close()
