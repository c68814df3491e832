"""The app and several indexed data sets (issue 39, item 1), and a collection indexed while the page is open
(item 8): the page says which data sets there are, shows one, lets the user choose, and never switches by itself;
a new collection's column appears when the notice says so."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from support.data import REPO, make_tiny_layout

from benchmarks.synthetic import synthetic_meta
from embed.common.identity import EmbeddingKey

pytestmark = pytest.mark.slow  # the app in Streamlit's AppTest

APP = str(REPO / "app" / "main.py")
CLASSES = ["n01440764"] * 3 + ["n01443537"] * 3


def _index(store, model, root):
    """A real collection of ``root``'s six images (synthetic vectors, weights marked real)."""
    meta = synthetic_meta(
        model, 4, root.name, str(root), weights_source="package", weights_fingerprint="sha256:0", rows=6
    )
    meta.complete = True
    name = EmbeddingKey(model, root.name, "val").collection_name
    store.ensure_collection(name, meta)
    vectors = np.random.default_rng(len(model)).normal(size=(6, 4)).astype(np.float32)
    store.upsert(name, np.arange(6), vectors, CLASSES, [f"images/val_{i}.JPEG" for i in range(6)], progress=False)
    store.flush(name)


@pytest.fixture
def two_data_sets(tmp_path):
    from indexer.milvus_store import VectorStore

    roots = {"alpha": make_tiny_layout(tmp_path / "alpha"), "beta": make_tiny_layout(tmp_path / "beta")}
    uri = str(tmp_path / "milvus.db")
    store = VectorStore(uri)
    for dataset, model in (("alpha", "effnet-lite0"), ("alpha", "effnet-lite1"), ("beta", "effnet-lite2")):
        _index(store, model, roots[dataset])
    yield {"uri": uri, "roots": roots, "store": store}
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()


def _app(monkeypatch, *argv):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["main.py", *argv])
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _columns(at):
    return [s.value for s in at.subheader]


def test_several_data_sets_are_named_one_is_shown_and_the_sidebar_chooses(two_data_sets, monkeypatch):
    at = _app(monkeypatch, "--uri", two_data_sets["uri"])
    assert _columns(at) == ["EfficientNet-Lite0", "EfficientNet-Lite1"], "alpha, the data set with most models"
    [line] = [i.value for i in at.info if "data sets" in i.value]
    assert "indexed for 2 data sets: alpha (2 models), beta (1 model)" in line and "This page shows alpha" in line
    assert str(two_data_sets["roots"]["alpha"]) in " ".join(c.value for c in at.sidebar.caption)
    at.selectbox(key="data_set").set_value("beta").run()
    assert not at.exception, [e.value for e in at.exception]
    assert _columns(at) == ["EfficientNet-Lite2"]
    assert any("This page shows beta" in i.value for i in at.info)
    assert str(two_data_sets["roots"]["beta"]) in " ".join(c.value for c in at.sidebar.caption)
    assert "images/val_0.JPEG" in next(m.value for m in at.markdown if m.value.startswith("**Query:**"))


def test_data_root_chooses_the_data_set_as_in_the_cli(two_data_sets, monkeypatch):
    at = _app(monkeypatch, "--uri", two_data_sets["uri"], "--data-root", str(two_data_sets["roots"]["beta"]))
    assert _columns(at) == ["EfficientNet-Lite2"]
    assert at.selectbox(key="data_set").value == "beta"
    assert any("This page shows beta" in i.value for i in at.info)


def test_a_collection_indexed_while_the_page_is_open_gets_its_column(tmp_path, monkeypatch):
    from indexer.milvus_store import VectorStore

    root = make_tiny_layout(tmp_path / "data")
    uri = str(tmp_path / "milvus.db")
    store = VectorStore(uri)
    _index(store, "effnet-lite0", root)
    at = _app(monkeypatch, "--uri", uri)
    assert _columns(at) == ["EfficientNet-Lite0"]
    _index(store, "effnet-lite2", root)  # a build finishing while the page is open
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("EfficientNet-Lite2's collection was indexed" in i.value for i in at.info)
    assert _columns(at) == ["EfficientNet-Lite0", "EfficientNet-Lite2"]
    assert any(b.key.startswith("requery_effnet-lite2_") for b in at.button if b.key), "and it answers"
