"""A search on a collection whose build did not finish (issue 39, item 3): refused when it holds nothing, warned
when it holds part, always with the build that completes it; in the CLI and in the app."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from support.cli import run
from support.data import REPO, make_tiny_layout

from benchmarks.synthetic import synthetic_meta
from embed.common.identity import EmbeddingKey

CLASSES = ["n01440764", "n01443537"] * 3  # the first three (the partial collection) hold both classes


@pytest.fixture(scope="module")
def half_built(tmp_path_factory):
    """effnet-lite0 whole (6 rows); effnet-lite1 killed during its upsert (3 of 6 rows); effnet-lite2 killed
    before its first row (0 of 6): metadata as a build writes it before the upsert (rows=6, complete=False)."""
    from milvus_lite.server_manager import server_manager_instance

    from indexer.milvus_store import VectorStore

    base = tmp_path_factory.mktemp("incomplete")
    root = make_tiny_layout(base / "data")
    uri = str(base / "milvus.db")
    store = VectorStore(uri)
    vectors = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    for model, held, complete in (("effnet-lite0", 6, True), ("effnet-lite1", 3, False), ("effnet-lite2", 0, False)):
        meta = synthetic_meta(
            model, 4, root.name, str(root), weights_source="package", weights_fingerprint="sha256:0", rows=6
        )
        meta.complete, meta.images = complete, 6
        name = EmbeddingKey(model, root.name, "val").collection_name
        store.ensure_collection(name, meta)
        ids = np.arange(held)
        paths = [f"images/val_{i}.JPEG" for i in ids]
        store.upsert(name, ids, vectors[:held], CLASSES[:held], paths, progress=False)
        store.flush(name)
    store.close()
    server_manager_instance.release_all()
    return {"uri": uri, "root": root}


def test_status_and_a_search_on_an_empty_incomplete_collection_name_the_build(half_built, tmp_path):
    status = run(["indexer", "status", "--uri", half_built["uri"]], cwd=tmp_path, timeout=120)
    assert "INCOMPLETE: 0 of 6 rows" in status.stdout and "INCOMPLETE: 3 of 6 rows" in status.stdout
    query = half_built["root"] / "val" / "images" / "val_0.JPEG"
    p = run(
        ["indexer", "search", "--model", "effnet-lite2", "--split", "val", "--image", str(query)]
        + ["--uri", half_built["uri"]],
        cwd=tmp_path,
        timeout=120,
    )
    assert p.returncode == 2, p.stdout + p.stderr
    assert "top 0" not in p.stdout
    assert "effnet_lite2__data__val is INCOMPLETE: 0 of 6 rows" in p.stderr, p.stderr
    assert (
        f"Complete it: python -m indexer build --model effnet-lite2 --split val --data-root {half_built['root']} "
        f"--limit 6" in p.stderr
    )


@pytest.mark.slow
def test_the_app_warns_on_a_partial_column_and_refuses_an_empty_one(half_built, monkeypatch):
    from streamlit.testing.v1 import AppTest

    models = "effnet-lite0,effnet-lite1,effnet-lite2"
    argv = ["main.py", "--uri", half_built["uri"], "--data-root", str(half_built["root"]), "--extra-models", models]
    monkeypatch.setattr(sys, "argv", argv)
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=300)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    partial = [w for w in warnings if "effnet_lite1__data__val is INCOMPLETE: 3 of 6 rows" in w]
    empty = [w for w in warnings if "effnet_lite2__data__val is INCOMPLETE: 0 of 6 rows" in w]
    assert partial and empty, warnings
    assert "python -m indexer build --model effnet-lite1" in partial[0]
    assert not any("effnet_lite0__data__val is INCOMPLETE" in w for w in warnings)
    requery = [b.key for b in at.button if b.key and b.key.startswith("requery_")]
    assert any(k.startswith("requery_effnet-lite1_") for k in requery), "the partial column still answers"
    assert not any(k.startswith("requery_effnet-lite2_") for k in requery)
