"""The app's details in a real browser (issue 39, item 8), started as the README starts it (from the repository
root, so that .streamlit/config.toml applies): no Deploy button, the "query" buttons of a row at one height however
the class names wrap, a click on a hit's "query" brings the new query into view, and the export buttons."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest
from support.browser import app_output, headless_chromium, needs_chromium, start_app, stop_app
from support.data import REPO, make_tiny_layout

from benchmarks.synthetic import synthetic_meta
from embed.common.identity import EmbeddingKey

pytestmark = [pytest.mark.slow, needs_chromium]

# a short class name and one that wraps in a thumbnail's caption
CLASSES = ["n01443537", "n01629819"] * 6


@pytest.fixture
def three_columns(tmp_path):
    from milvus_lite.server_manager import server_manager_instance

    from indexer.milvus_store import VectorStore

    root = make_tiny_layout(tmp_path / "data", n_per_class=6, classes=("n01443537", "n01629819"))
    uri = str(tmp_path / "milvus.db")
    store = VectorStore(uri)
    rng = np.random.default_rng(0)
    for model in ("effnet-lite0", "effnet-lite1", "effnet-lite2"):
        meta = synthetic_meta(
            model, 4, root.name, str(root), weights_source="package", weights_fingerprint="sha256:0", rows=12
        )
        meta.complete = True
        name = EmbeddingKey(model, root.name, "val").collection_name
        store.ensure_collection(name, meta)
        paths = sorted(f"images/val_{i}.JPEG" for i in range(12))
        store.upsert(name, np.arange(12), rng.normal(size=(12, 4)).astype(np.float32), CLASSES, paths, False)
        store.flush(name)
    store.close()
    server_manager_instance.release_all()
    return {"uri": uri, "root": str(root)}


ROW_TOPS = """
const rows = new Map();
for (const b of document.querySelectorAll('button')) {
  const box = b.getBoundingClientRect();
  if (b.innerText.trim() !== 'query' || box.height === 0) continue;
  const row = b.closest('[data-testid="stHorizontalBlock"]');
  if (!rows.has(row)) rows.set(row, []);
  rows.get(row).push(box.top);
}
return [...rows.values()];
"""

QUERY_IN_VIEW = """
const q = [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
  .find(e => e.innerText.startsWith('Query:'));
if (!q) return null;
const r = q.getBoundingClientRect();
return [r.top, window.innerHeight, q.innerText];
"""


def _wait(driver, check, seconds=240):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out; app output:\n{app_output(driver.app_process)}")


def test_no_deploy_button_aligned_buttons_requery_scrolls_up_and_export(three_columns, tmp_path):
    from selenium.webdriver.common.by import By

    proc, url = start_app(
        ["--uri", three_columns["uri"], "--data-root", three_columns["root"]],
        REPO,  # as the README says: from the repository root
        dict(os.environ, PYTHONPATH=str(REPO)),
    )
    driver = headless_chromium(tmp_path / "chrome", "1400,1000")
    driver.app_process = proc
    try:
        driver.get(url)
        _wait(driver, lambda: len(driver.execute_script(ROW_TOPS)) >= 9)  # 3 columns x 3 rows of hits
        time.sleep(2)
        driver.save_screenshot(str(tmp_path / "search.png"))
        assert not driver.find_elements(By.CSS_SELECTOR, "[data-testid='stAppDeployButton']")
        assert "Deploy" not in driver.find_element(By.TAG_NAME, "body").text
        for tops in driver.execute_script(ROW_TOPS):
            assert max(tops) - min(tops) < 2, tops
        labels = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stDownloadButton'] button")]
        assert labels == ["Download CSV", "Download JSON"], labels
        before = driver.execute_script(QUERY_IN_VIEW)[2]
        last = [
            b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == "query" and b.size["height"]
        ][-1]
        driver.execute_script("arguments[0].scrollIntoView({block: 'end'});", last)
        time.sleep(1)
        assert driver.execute_script(QUERY_IN_VIEW)[0] < 0, "scrolled down: the query is out of view"
        last.click()
        top, height, label = _wait(
            driver, lambda: (v := driver.execute_script(QUERY_IN_VIEW)) and v[2] != before and v, seconds=120
        )
        time.sleep(2)
        top, height, label = driver.execute_script(QUERY_IN_VIEW)
        driver.save_screenshot(str(tmp_path / "after_click.png"))
        assert 0 <= top < height, f"the new query ({label}) is out of view: top {top}, window {height}"
        if os.environ.get("APP_SCREENSHOTS"):
            for name in ("search.png", "after_click.png"):
                shutil.copy(tmp_path / name, os.path.join(os.environ["APP_SCREENSHOTS"], name))
    finally:
        driver.quit()
        stop_app(proc)
