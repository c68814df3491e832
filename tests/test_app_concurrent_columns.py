"""The app's columns search concurrently, one failing column leaves the others, an upload is embedded once per model."""

import numpy as np
import pytest
from PIL import Image

from app.backend import AppSettings, Backend, Query
from benchmarks.synthetic import synthetic_meta
from embed.common.identity import EmbeddingKey
from indexer.milvus_store import StoreError, VectorStore

MODELS = {"gresnet": 48, "convnext": 32, "vit": 16}  # small stand-in dims: only the search path is under test
ROWS = 120


@pytest.fixture
def three_collections(tmp_path):
    """Three indexed collections of clustered vectors in one Milvus Lite database, as the app finds them."""
    uri = str(tmp_path / "milvus.db")
    root = str(tmp_path / "data")
    store = VectorStore(uri)
    rng = np.random.default_rng(0)
    labels = np.arange(ROWS) % 6
    for model, dim in MODELS.items():
        name = EmbeddingKey(model, "synthetic", "val").collection_name
        meta = synthetic_meta(
            model, dim, "synthetic", root, weights_fingerprint="random:seed0", rows=ROWS, complete=True
        )
        store.ensure_collection(name, meta)
        vecs = (rng.normal(size=(6, dim))[labels] + rng.normal(scale=0.5, size=(ROWS, dim))).astype(np.float32)
        store.upsert(
            name, np.arange(ROWS), vecs, [f"c{c}" for c in labels], [f"{i}.jpg" for i in range(ROWS)], progress=False
        )
        store.flush(name)
    backend = Backend(AppSettings(uri=uri, data_root=root, split="val"))
    yield backend, labels
    backend.store.close()
    store.close()


def _query(row: int, labels) -> Query:
    return Query(Image.new("RGB", (8, 8)), f"c{labels[row]}", row, f"{row}.jpg")


def _summary(results):
    return [
        (r.model, r.collection, r.problem, [(h.id, round(h.distance, 4), h.is_match) for h in r.hits], r.precision)
        for r in results
    ]


def test_concurrent_search_equals_sequential(three_collections):
    backend, labels = three_collections
    models = list(MODELS) + ["effnet-lite0"]  # a model that is not indexed shows its build command in both modes
    for row in (0, 7, 119):
        query = _query(row, labels)
        concurrent = backend.search_all(models, query, k=5)
        sequential = [backend.search(m, query, 5) for m in models]
        assert _summary(concurrent) == _summary(sequential)
        assert [r.model for r in concurrent] == models
        for r in concurrent[:3]:
            assert len(r.hits) == 5 and row not in [h.id for h in r.hits]  # leave-one-out, real hits
            assert r.precision is not None and r.precision > 0.5  # clusters: neighbours share the class
        assert concurrent[3].problem and "indexer build --model effnet-lite0" in concurrent[3].build_command


def test_one_failing_column_does_not_break_the_others(three_collections, monkeypatch):
    backend, labels = three_collections
    query = _query(3, labels)
    expected = _summary(backend.search_all(list(MODELS), query, k=4))
    real_search = backend.store.search
    broken = {
        EmbeddingKey("convnext", "synthetic", "val").collection_name: RuntimeError("segment lost"),
        EmbeddingKey("vit", "synthetic", "val").collection_name: StoreError("server went away"),
    }

    def search(name, *args, **kwargs):
        if name in broken:
            raise broken[name]
        return real_search(name, *args, **kwargs)

    monkeypatch.setattr(backend.store, "search", search)
    results = backend.search_all(list(MODELS), query, k=4)
    assert [r.model for r in results] == list(MODELS)
    assert _summary(results[:1]) == expected[:1]  # the healthy column is untouched
    assert "segment lost" in results[1].problem and not results[1].hits
    assert "server went away" in results[2].problem and not results[2].hits


def test_upload_is_embedded_once_per_model_before_the_searches(three_collections, monkeypatch):
    backend, _ = three_collections
    calls = []

    def query_vector(model, query):
        calls.append(model)
        return np.ones((1, MODELS[model]), np.float32)

    monkeypatch.setattr(backend, "query_vector", query_vector)
    upload = Query(Image.new("RGB", (8, 8)), None, None, "upload.png")
    results = backend.search_all(list(MODELS), upload, k=3)
    assert sorted(calls) == sorted(MODELS)
    assert all(len(r.hits) == 3 and r.precision is None and r.problem is None for r in results)
