"""One pixel limit, one check and one message for every image: app uploads and CLI query files alike, at 56 MP (over
the limit, under Pillow's own guard) and at 400 MP (over Pillow's guard too). The files are PNG headers declaring
those sizes: nothing of that size is ever allocated."""

import sys

import pytest
from support.cli import run
from support.data import REPO, bomb_png
from support.milvus import six_image_database

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
    base = tmp_path_factory.mktemp("pixels")
    uri, root = six_image_database(base, ("effnet-lite0",))
    return {"uri": uri, "root": str(root)}


def test_the_app_refuses_both_uploads_with_the_one_message(database, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["main.py", "--uri", database["uri"], "--data-root", database["root"]])
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=300)
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
    res = run(
        ["indexer", "search", "--model", "effnet-lite0", "--split", "val", "--uri", database["uri"], "--image", *paths],
        cwd=tmp_path,
    )
    assert res.returncode == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {p}: {too_many_pixels(w, h)}" for p, (w, h) in zip(paths, SIZES)]
