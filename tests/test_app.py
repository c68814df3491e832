"""The Streamlit app: AppTest for the flows, and a real headless-Chromium run."""

import io
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from support.browser import needs_chromium, streamlit_in_chromium
from support.builds import extract_config
from support.data import REPO, make_tiny_layout

# the app in Streamlit's AppTest and a real browser
pytestmark = pytest.mark.slow

APP = str(REPO / "app" / "main.py")


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    """gresnet and vit (random weights) plus effnet-lite0 indexed; convnext deliberately missing."""
    from indexer.build import build
    from indexer.milvus_store import VectorStore

    base = tmp_path_factory.mktemp("appindex")
    root = make_tiny_layout(base / "data", n_per_class=4, classes=("n01440764", "n01443537", "n01484850"))
    uri = str(base / "milvus.db")
    store = VectorStore(uri)
    for model in ("gresnet", "vit", "effnet-lite0"):
        cfg = extract_config(root, base / "emb", model=model, batch_size=12)
        build(cfg, store, progress=False)
    store.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()
    # AppTest runs the app in this process and keeps the database open; the browser test's app is another
    # process, so it gets a copy of its own (Milvus Lite allows one process per database)
    shutil.copytree(uri, base / "browser.db", ignore=shutil.ignore_patterns("LOCK"))
    return {"uri": uri, "root": str(root), "browser_uri": str(base / "browser.db")}


def _app(small_index, monkeypatch):
    from streamlit.testing.v1 import AppTest

    # as arguments, the way the README starts the app (streamlit run app/main.py -- --uri ... --data-root ...)
    monkeypatch.setattr(sys, "argv", ["main.py", "--uri", small_index["uri"], "--data-root", small_index["root"]])
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at):
    return " ".join(
        [m.value for m in at.markdown]
        + [c.value for c in at.caption]
        + [s.value for s in at.subheader]
        + [w.value for w in at.warning]
        + [e.value for e in at.error]
        + [c.value for c in at.code]
    )


def _query_label(at):
    return next(m.value for m in at.markdown if m.value.startswith("**Query:**"))


def test_opens_on_the_real_weights_models_and_says_where_the_blog_ones_are(small_index, monkeypatch):
    at = _app(small_index, monkeypatch)
    # gresnet and vit were built with random weights, convnext not at all: only effnet-lite0 is real
    assert [s.value for s in at.subheader] == ["EfficientNet-Lite0"]
    assert at.title[0].value == "Backbone retrieval: EfficientNet-Lite0", "the title names what is compared"
    text = _texts(at)
    assert (
        "GResNet-50: RANDOM weights" in text
        and "ConvNeXt-T: not indexed" in text
        and "ViT-S (DeiT-III): RANDOM" in text
    )
    assert "images/val_0.JPEG" in _query_label(at), "the page starts with the first indexed image"
    assert "RANDOM weights" not in " ".join(w.value for w in at.warning)


def test_blog_models_from_the_sidebar_show_random_and_missing_columns(small_index, monkeypatch):
    at = _app(small_index, monkeypatch)
    at.multiselect(key="models").set_value(["gresnet", "convnext", "vit", "effnet-lite0"]).run()
    assert not at.exception
    titles = [s.value for s in at.subheader]
    assert titles == ["GResNet-50", "ConvNeXt-T", "ViT-S (DeiT-III)", "EfficientNet-Lite0"]
    assert at.title[0].value == "Backbone retrieval: GResNet-50 vs ConvNeXt-T vs ViT-S (DeiT-III) vs EfficientNet-Lite0"
    text = _texts(at)
    assert "python -m indexer build --model convnext --split val" in text
    assert "RANDOM weights" in text and "squared L2" in text and "Precision@9" in text
    assert "HIT" in text or "miss" in text
    # every result grid has a requery button per hit: 9 hits x 3 built columns
    assert len([b for b in at.button if b.key and b.key.startswith("requery_")]) == 27


def test_pick_by_position_and_class(small_index, monkeypatch):
    at = _app(small_index, monkeypatch)
    at.number_input[0].set_value(5).run()
    canonical = sorted(f"images/val_{i}.JPEG" for i in range(12))  # positions follow sorted paths
    assert canonical[5] in _query_label(at)
    at.button(key="random").click().run()
    assert not at.exception
    at.selectbox(key="class_filter").set_value("n01484850").run()
    assert not at.exception
    assert "tench" not in _query_label(at) and "n01484850" in _texts(at)


def test_click_result_to_requery(small_index, monkeypatch):
    at = _app(small_index, monkeypatch)
    button = next(b for b in at.button if b.key and b.key.startswith("requery_effnet-lite0_"))
    target = int(button.key.rsplit("_", 1)[1])
    button.click().run()
    assert not at.exception
    canonical = sorted(f"images/val_{i}.JPEG" for i in range(12))  # ids are positions in sorted-path order
    assert canonical[target] in _query_label(at)


def test_upload_and_bad_upload(small_index, monkeypatch):
    at = _app(small_index, monkeypatch)
    at.radio(key="source").set_value("Upload").run()
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(buf, "JPEG")
    at.file_uploader(key="upload").set_value(("query.jpg", buf.getvalue(), "image/jpeg")).run()
    assert not at.exception
    text = _texts(at)
    assert "query.jpg" in _query_label(at) and "unknown (uploaded image)" in text
    assert "query latency" in text
    # each model is loaded once, announced apart from its query latency; the next upload reuses it
    assert sorted(t.value.split(" loaded in ")[0] for t in at.toast) == ["EfficientNet-Lite0"]
    assert all("not part of its query latency" in t.value for t in at.toast)
    at.file_uploader(key="upload").set_value(("again.jpg", buf.getvalue(), "image/jpeg")).run()
    assert not at.exception and len(at.toast) == 0 and "query latency" in _texts(at)
    # the upload limit shown by the widget and enforced by the server are the backend's
    from streamlit import config

    from app.backend import MAX_UPLOAD_BYTES

    assert at.file_uploader(key="upload").proto.max_upload_size_mb * 1024 * 1024 == MAX_UPLOAD_BYTES
    assert config.get_option("server.maxUploadSize") * 1024 * 1024 == MAX_UPLOAD_BYTES
    at.file_uploader(key="upload").set_value(("fake.jpg", b"not an image" * 10, "image/jpeg")).run()
    assert not at.exception
    assert any("Cannot use fake.jpg" in e.value for e in at.error)


def test_extra_models_argument_adds_columns(small_index, monkeypatch):
    monkeypatch.setattr(
        sys,
        "argv",
        ["main.py", "--uri", small_index["uri"], "--data-root", small_index["root"], "--extra-models", "vit"],
    )
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    assert not at.exception
    assert [s.value for s in at.subheader] == ["ViT-S (DeiT-III)", "EfficientNet-Lite0"]


def test_locked_database_explains_the_remedy(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    uri = str(tmp_path / "locked.db")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from pymilvus import MilvusClient; c = MilvusClient({uri!r}); "
            f"print('open', flush=True); import time; time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        monkeypatch.setenv("RETRIEVAL_LITE_WAIT_S", "1")
        monkeypatch.setattr(sys, "argv", ["main.py", "--uri", uri, "--data-root", str(tmp_path / "imgs")])
        at = AppTest.from_file(APP, default_timeout=120)
        at.run()
        assert not at.exception
        # one message, then the commands in full (the app's own settings kept)
        assert len(at.error) == 1 and "open in another process that does not share it" in at.error[0].value
        assert [c.value for c in at.code] == [
            f"python -m indexer serve --data-dir {uri}\n"
            f"streamlit run app/main.py -- --uri http://127.0.0.1:19530 --split val --data-root {tmp_path / 'imgs'}"
        ]
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("page", ["search", "evaluation", "maps"])
def test_a_bad_setting_is_one_clear_message_on_every_page(page, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RETRIEVAL_INSERT_BATCH_BYTES", "32MB")
    monkeypatch.setattr(sys, "argv", ["main.py", "--uri", str(tmp_path / "none.db")])
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if page != "search":
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Cannot start: RETRIEVAL_INSERT_BATCH_BYTES='32MB' is not a number. Correct or unset it, then restart the app."
    ]


@needs_chromium
def test_real_browser_renders_three_columns(small_index, tmp_path):
    from selenium.webdriver.common.by import By

    with streamlit_in_chromium(
        [
            "--uri",
            small_index["browser_uri"],
            "--data-root",
            small_index["root"],
            "--extra-models",
            "gresnet,convnext,vit",
        ],
        tmp_path,
    ) as (driver, url):
        driver.get(url)
        deadline = time.time() + 240
        imgs = []
        while time.time() < deadline:
            heads = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "h3")]
            imgs = [
                i
                for i in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img")
                if i.get_attribute("naturalWidth") not in (None, "0")
            ]
            if {"GResNet-50", "ConvNeXt-T", "ViT-S (DeiT-III)"} <= {h.strip() for h in heads} and len(imgs) >= 19:
                break
            time.sleep(1)
        shot = tmp_path / "app.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        heads = {h.text.strip() for h in driver.find_elements(By.CSS_SELECTOR, "h3")}
        assert {"GResNet-50", "ConvNeXt-T", "ViT-S (DeiT-III)"} <= heads, heads
        assert len(imgs) >= 19, f"query + 2x9 result images expected, saw {len(imgs)}"
        if os.environ.get("APP_SCREENSHOT"):
            shutil.copy(shot, os.environ["APP_SCREENSHOT"])
