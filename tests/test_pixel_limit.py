"""One pixel limit, one check and one message for every image: app uploads and CLI query files alike, at 56 MP (over
the limit, under Pillow's own guard) and at 400 MP (over Pillow's guard too). The files are PNG headers declaring
those sizes: nothing of that size is ever allocated."""

import os
import subprocess
import sys

import numpy as np
import pytest
from support.data import REPO, bomb_png, make_tiny_layout
from support.waits import HANG_S

from embed.sources.imaging import MAX_IMAGE_PIXELS, BadImage, load_rgb, too_many_pixels

SIZES = [(8000, 7000), (20000, 20000)]  # 56 MP and 400 MP


@pytest.mark.parametrize("width,height", SIZES)
def test_the_loader_refuses_both_with_the_one_message(width, height):
    assert width * height > MAX_IMAGE_PIXELS == 50_000_000
    with pytest.raises(BadImage) as e:
        load_rgb(bomb_png(width, height))
    assert (
        e.value.reason
        == too_many_pixels(width, height)
        == f"too many pixels: {width:,} x {height:,} = {width * height:,}; the limit is 50,000,000"
    )


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """One collection (vectors no model made: the images are refused before any model would be needed)."""
    from benchmarks.synthetic import synthetic_meta
    from embed.common.identity import EmbeddingKey
    from indexer.milvus_store import VectorStore

    base = tmp_path_factory.mktemp("pixels")
    root = make_tiny_layout(base / "data")
    uri = str(base / "milvus.db")
    store = VectorStore(uri)
    name = EmbeddingKey("effnet-lite0", root.name, "val").collection_name
    store.ensure_collection(name, synthetic_meta("effnet-lite0", 8, root.name, str(root), rows=6, complete=True))
    store.upsert(
        name,
        np.arange(6),
        np.eye(6, 8, dtype=np.float32),
        ["n01440764"] * 3 + ["n01443537"] * 3,
        [f"images/val_{i}.JPEG" for i in range(6)],
        progress=False,
    )
    store.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()
    return {"uri": uri, "root": str(root)}


def test_the_app_refuses_both_uploads_with_the_one_message(database, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["main.py", "--uri", database["uri"], "--data-root", database["root"]])
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=HANG_S)
    at.run()
    at.radio(key="source").set_value("Upload").run()
    for width, height in SIZES:
        at.file_uploader(key="upload").set_value((f"big{width}.png", bomb_png(width, height), "image/png")).run()
        assert not at.exception, [e.value for e in at.exception]
        assert [e.value for e in at.error] == [f"Cannot use big{width}.png: {too_many_pixels(width, height)}"]


def test_the_cli_refuses_both_query_files_with_the_one_message(database, tmp_path):
    paths = []
    for width, height in SIZES:
        paths.append(tmp_path / f"big{width}.png")
        paths[-1].write_bytes(bomb_png(width, height))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "indexer",
            "search",
            "--model",
            "effnet-lite0",
            "--split",
            "val",
            "--uri",
            database["uri"],
            "--image",
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=HANG_S,
    )
    assert res.returncode == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {p}: {too_many_pixels(w, h)}" for p, (w, h) in zip(paths, SIZES)]
