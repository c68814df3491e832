"""Columns built to different sizes search the same images, and a build that runs while the app is open is seen
on the page's next run: the app never searches rows its positions, classes and ceilings do not know of."""

import uuid
from dataclasses import replace

import numpy as np
import pytest

from app.backend import AppSettings, Backend, Query
from app.comparison import CollectionImages, Comparison, IndexedImage, SearchScope
from benchmarks.synthetic import synthetic_meta
from indexer.milvus_store import VectorStore, id_filter

DIM, CLASSES = 8, ("n01440764", "n01443537", "n01484850")


def _rows(ids):
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(max(ids) + 1, DIM)).astype(np.float32)[list(ids)]
    classes = [CLASSES[i % len(CLASSES)] for i in ids]
    return list(ids), vectors, classes, [f"images/val_{i}.JPEG" for i in ids]


def _collection(store, name, model, ids, complete=True):
    meta = synthetic_meta(model, DIM, "tiny", "/data/tiny", rows=len(ids), complete=complete)
    store.ensure_collection(name, meta)
    ids, vectors, classes, paths = _rows(ids)
    store.upsert(name, ids, vectors, classes, paths, progress=False)
    store.flush(name)
    return meta


@pytest.mark.parametrize(
    "within", [range(0, 25), range(10, 40), frozenset({1, 4, 9, 16, 25, 36, 49}), frozenset({3})], ids=repr
)
def test_a_search_within_ids_is_exact_brute_force_over_those_ids(store_uri, within):
    store = VectorStore(store_uri)
    name = f"scope_{uuid.uuid4().hex[:12]}"
    _collection(store, name, "a", range(60))
    try:
        ids, vectors, _, _ = _rows(range(60))
        queries = vectors[[0, 30, 59]] + 0.01
        for q, own, row in zip(
            queries, [0, 30, 59], store.search(name, queries, k=5, within=within, exclude_self_ids=[0, 30, 59])
        ):
            candidates = np.array(sorted(i for i in within if i != own))
            d = ((vectors[candidates].astype(np.float64) - q) ** 2).sum(1)
            expected = candidates[np.argsort(d, kind="stable")[:5]].tolist()
            assert [h["id"] for h in row] == expected
    finally:
        store.drop(name)


def test_a_range_of_positions_is_filtered_by_two_comparisons_and_any_other_set_by_a_list():
    assert id_filter(range(0, 300)) == "id >= 0 and id < 300"
    assert id_filter(frozenset({9, 2, 5})) == "id in [2, 5, 9]"


@pytest.fixture
def small_open(tmp_path):
    """(store, the collection's metadata, the app's backend) over one collection, "small", of 20 rows."""
    uri = str(tmp_path / "milvus.db")
    store = VectorStore(uri)
    meta = _collection(store, "small_val", "small", range(20))
    yield store, meta, Backend(AppSettings(uri=uri, data_root="/data/tiny"))
    store.close()


def _images(model, ids):
    meta = synthetic_meta(model, DIM, "tiny", "/data/tiny")
    rows = [{"id": i, "class_id": CLASSES[i % 3], "relpath": f"images/val_{i}.JPEG"} for i in ids]
    return CollectionImages.from_rows(model, model.upper(), meta, rows)


def test_columns_of_different_sizes_search_the_images_they_share_and_their_ceilings_agree():
    big, small = _images("big", range(30)), _images("small", range(20))
    comparison = Comparison.of([big, small], "db")
    scope = comparison.scope
    assert isinstance(scope, SearchScope) and scope.ids == range(0, 20) and len(scope) == 20
    assert scope.class_counts == {CLASSES[0]: 7, CLASSES[1]: 7, CLASSES[2]: 6}
    query = IndexedImage(0, CLASSES[0], "images/val_0.JPEG")
    # the whole collections set different ceilings (10 and 7 images of the class); the shared 20 one
    assert big.best_precision(CLASSES[0], query, 9) == 9 / 9 and small.best_precision(CLASSES[0], query, 9) == 6 / 9
    assert big.best_precision(CLASSES[0], query, 9, scope) == small.best_precision(CLASSES[0], query, 9, scope) == 6 / 9
    outside = IndexedImage(25, CLASSES[1], "images/val_25.JPEG")  # a query only BIG holds: nothing to exclude
    assert big.best_precision(CLASSES[1], outside, 9, scope) == 7 / 9
    gaps = Comparison.of([_images("a", [0, 2, 3, 5]), _images("b", [0, 2, 5, 7])], "db").scope
    assert gaps is not None and gaps.ids == frozenset({0, 2, 5})
    assert Comparison.of([big, _images("twin", range(30))], "db").scope is None, "alike: each whole collection"


def test_the_backend_searches_only_the_shared_images_when_given_the_scope(tmp_path):
    uri = str(tmp_path / "milvus.db")
    store = VectorStore(uri)
    _collection(store, "big_val", "big", range(30))
    _collection(store, "small_val", "small", range(20))
    backend = Backend(AppSettings(uri=uri, data_root="/data/tiny"))
    comparison = backend.compare(["big", "small"])
    _, vectors, classes, _ = _rows(range(30))
    # an upload near an image only BIG holds: unscoped, BIG finds it; scoped, neither column can
    query = Query(None, CLASSES[25 % 3], label="upload")
    whole = backend.search("big", query, 5, vector=vectors[25:26] + 0.001)
    scoped = [
        backend.search(m, query, 5, vector=vectors[25:26] + 0.001, scope=comparison.scope) for m in ("big", "small")
    ]
    assert whole.hits[0].id == 25
    assert [h.id for h in scoped[0].hits] == [h.id for h in scoped[1].hits], "same images, same vectors: same ranks"
    assert all(h.id < 20 for r in scoped for h in r.hits)
    assert scoped[0].best_precision == scoped[1].best_precision == 5 / 5
    store.close()


def test_a_build_while_the_app_is_open_is_seen_on_the_next_run_and_then_nothing_more(small_open):
    store, meta, backend = small_open
    assert len(backend.images("small").images) == 20 and backend.changes() == []

    # a build to --limit 30 starts: it marks the collection incomplete, then writes the new rows
    store.set_meta("small_val", replace(meta, rows=30, complete=False))
    ids, vectors, classes, paths = _rows(range(20, 30))
    store.upsert("small_val", ids, vectors, classes, paths, progress=False)
    store.flush("small_val")
    [change] = backend.changes()
    assert (change.before, change.after, change.complete) == (20, 30, False)
    assert "changed (20 → 30 images)" in change.text and "has not finished" in change.text
    assert len(backend.images("small").images) == 30, "the page's images are the collection's as it is"

    store.set_meta("small_val", replace(meta, rows=30, complete=True))
    [done] = backend.changes()
    assert done.complete and "has not finished" not in done.text
    assert backend.changes() == []

    _collection(store, "big_val", "big", range(30))
    [added] = backend.changes()
    assert added.before is None and "was indexed (30 images)" in added.text
    assert backend.available_models() == ["big", "small"]
    store.drop("small_val")
    [dropped] = backend.changes()
    assert dropped.after is None and "was dropped" in dropped.text and backend.available_models() == ["big"]


@pytest.mark.parametrize(
    "relpath", ["images/café.JPEG", 'images/a"b.JPEG', "images/it's.JPEG", "images/back\\slash.JPEG"]
)
def test_an_indexed_image_is_found_by_its_path_whatever_its_characters(tmp_path, relpath):
    store = VectorStore(str(tmp_path / "milvus.db"))
    _collection(store, "paths_val", "a", range(3))
    ids, vectors, classes, _ = _rows(range(3, 4))
    store.upsert("paths_val", ids, vectors, classes, [relpath], progress=False)
    store.flush("paths_val")
    assert store.ids_of_paths("paths_val", [relpath, "images/val_1.JPEG", "images/absent.JPEG"]) == {
        relpath: 3,
        "images/val_1.JPEG": 1,
    }
    store.close()


def test_each_session_is_told_of_a_change_once_whichever_session_re_read_the_collections(small_open):
    store, meta, backend = small_open
    first = second = backend.generation
    store.set_meta("small_val", replace(meta, rows=20, weights_detail="rebuilt"))
    first, told = backend.changes_since(first)  # this session's run re-reads the collection
    assert [c.title for c in told] == ["small"]
    second, told_too = backend.changes_since(second)  # the other session: the same change, not lost
    assert told_too == told and first == second
    assert backend.changes_since(first) == (first, []), "and each is told once"


def test_a_data_root_taken_from_the_collections_is_named_as_theirs(tmp_path):
    uri = str(tmp_path / "milvus.db")
    store = VectorStore(uri)
    _collection(store, "small_val", "small", range(3))  # built from /data/tiny, absent here
    problem = Backend(AppSettings(uri=uri)).data_root_problem()
    assert problem is not None and problem.startswith("The collections were built from images in /data/tiny")
    assert "Pass --data-root" in problem and "without --data-root" not in problem
    given = Backend(AppSettings(uri=uri, data_root=str(tmp_path / "moved"))).data_root_problem()
    assert given is not None and "start the app without --data-root" in given
    store.close()


def test_a_report_is_compared_with_the_collection_it_read_not_another_datasets():
    from pathlib import Path

    from indexer.evaluation.document import ReportDocument

    doc = ReportDocument.from_json((Path(__file__).parents[1] / "docs" / "report" / "report.json").read_text())
    lite0 = next(r for r in doc.results if r.model == "effnet-lite0")
    weights = lite0.weights.split(": ", 1)
    as_read = synthetic_meta(
        "effnet-lite0",
        DIM,
        "tiny-imagenet-200",
        "/data/t",
        weights_source=weights[0],
        weights_fingerprint=weights[1],
        rows=lite0.n,
        complete=True,
    )
    other_dataset = replace(as_read, rows=300)
    collections = {lite0.collection: as_read, "effnet_lite0__imagenette__val": other_dataset}
    assert doc.changed_collections(collections) == [], "the other dataset's smaller collection is not this report's"
    rebuilt = {lite0.collection: replace(as_read, rows=300)}
    assert doc.changed_collections(rebuilt) == [f"effnet-lite0 now holds 300 images; the report evaluated {lite0.n:,}."]
