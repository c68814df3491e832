"""One default Milvus Lite database for the app and the CLI (issue 15).

The first process to open the database serves it on 127.0.0.1 and records the address next to it
(``<db>.server.json``); later processes connect there. Tested with real processes: a Streamlit app
opened in headless Chromium, then CLI commands on the same default database while it is open.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.browser import headless_chromium, needs_chromium, start_app, stop_app
from support.cli import build_tiny12, repo_env, run
from support.data import free_port
from support.processes import lite_database_held_open

# the app in a browser beside CLI processes on one database
pytestmark = pytest.mark.slow


def _holder(uri: str):
    """Another process of this tool with the database open (it becomes the owner)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from indexer.milvus_store import VectorStore; s = VectorStore({uri!r}); "
            f"s.list_collections(); print('open', flush=True); import time; time.sleep(3600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=repo_env(),
    )
    assert proc.stdout.readline().strip() == "open"
    return proc


def test_second_process_uses_the_owner_then_takes_over_when_it_dies(tmp_path):
    from indexer import shared_lite
    from indexer.milvus_store import VectorStore

    uri = str(tmp_path / "milvus.db")
    holder = _holder(uri)
    try:
        record = json.loads((tmp_path / "milvus.db.server.json").read_text())
        assert record["pid"] == holder.pid and record["host"] == "127.0.0.1"
        store = VectorStore(uri, backoff=0.1)
        store.client.create_collection("shared_probe", dimension=4)
        assert "shared_probe" in store.list_collections()
        assert shared_lite.served_here(Path(uri)) is None, "connected to the owner, not opened here"
    finally:
        holder.kill()  # no clean exit: the record is left behind, stale
        holder.wait()
    try:
        # the owner is gone: the next call reconnects, finds the stale record, removes it and opens the file here
        assert "shared_probe" in store.list_collections()
        record = json.loads((tmp_path / "milvus.db.server.json").read_text())
        assert record["pid"] == os.getpid()
    finally:
        store.close()
        shared_lite.release(uri)
    assert not (tmp_path / "milvus.db.server.json").exists()


def test_stale_record_of_a_dead_process_is_removed(tmp_path):
    from indexer import shared_lite

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    db = tmp_path / "milvus.db"
    (tmp_path / "milvus.db.server.json").write_text(
        json.dumps({"pid": dead.pid, "port": free_port(), "host": "127.0.0.1", "path": str(db), "started": 0})
    )
    assert shared_lite.live_record(db) is None
    assert not (tmp_path / "milvus.db.server.json").exists()


def test_foreign_holder_is_named_with_the_remedy(tmp_path):
    """A process that opened the file without this tool (no record) cannot be shared: say so, and how to fix it."""
    uri = str(tmp_path / "foreign.db")
    with lite_database_held_open(uri):
        p = run(["indexer", "status", "--uri", uri], RETRIEVAL_LITE_WAIT_S="1")
        assert p.returncode == 2
        assert f"error: {uri} is open in another process that does not share it" in p.stderr
        assert f"python -m indexer serve --data-dir {uri}" in p.stderr and "Traceback" not in p.stderr


def _broken_jpeg(good: Path) -> bytes:
    data = good.read_bytes()
    return data[: len(data) // 3]


@needs_chromium
def test_app_open_in_a_browser_and_cli_share_the_default_database(tmp_path):
    from selenium.webdriver.common.by import By

    info = build_tiny12(tmp_path)  # cwd tmp_path: the default database is tmp_path/data/milvus.db
    work = info["work"]
    record_file = work / "data" / "milvus.db.server.json"
    assert not record_file.exists(), "the build has exited: it no longer serves the database"
    app, url = start_app(["--extra-models", "effnet-lite0"], work, repo_env())
    driver = None
    try:
        driver = headless_chromium(tmp_path / "chrome")
        driver.get(url)
        deadline = time.time() + 240
        imgs, heads = [], set()
        while time.time() < deadline:
            heads = {h.text.strip() for h in driver.find_elements(By.CSS_SELECTOR, "h3")}
            imgs = [
                i
                for i in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img")
                if i.get_attribute("naturalWidth") not in (None, "0")
            ]
            if "EfficientNet-Lite0" in heads and len(imgs) >= 10:
                break
            time.sleep(1)
        assert "EfficientNet-Lite0" in heads and len(imgs) >= 10, (heads, len(imgs))
        record = json.loads(record_file.read_text())
        assert record["pid"] == app.pid, "the app opened the database first: it serves it"

        # the CLI, on the same default database, while the app holds it
        status = run(["indexer", "status"], cwd=work)
        assert status.returncode == 0, status.stderr
        assert "effnet_lite0__tiny12__val" in status.stdout and "rows=12" in status.stdout
        assert f"Milvus Lite at data/milvus.db (served by pid {app.pid} on http://127.0.0.1:" in status.stdout

        queries = tmp_path / "queries"
        queries.mkdir()
        for image in info["images"]:
            shutil.copy(image, queries)
        (queries / "broken.jpg").write_bytes(_broken_jpeg(info["images"][0]))
        search = run(
            [
                "indexer",
                "search",
                "--model",
                "effnet-lite0",
                "--split",
                "val",
                "--image",
                str(queries),
                "--json",
                "-k",
                "5",
            ],
            cwd=work,
        )
        answers = [json.loads(line) for line in search.stdout.splitlines()]
        assert len(answers) == 13, search.stderr
        good = [a for a in answers if "hits" in a]
        bad = [a for a in answers if "error" in a]
        assert len(good) == 12 and all(len(a["hits"]) == 5 for a in good)
        # an indexed image finds itself first
        assert all(
            a["hits"][0]["distance"] < 1e-3 and Path(a["hits"][0]["relpath"]).name == Path(a["image"]).name
            for a in good
        )
        assert [a["image"] for a in bad] == [str(queries / "broken.jpg")]
        assert str(queries / "broken.jpg") in bad[0]["error"] and f"error: {bad[0]['error']}" in search.stderr
        assert search.returncode == 1, "exit status 1: one image could not be answered"
        assert json.loads(record_file.read_text())["pid"] == app.pid, "the CLI used the app's server"

        # the upload widget shows the app's own limit
        driver.find_element(By.XPATH, "//label[.//p[text()='Upload']]").click()
        deadline = time.time() + 60
        while time.time() < deadline and "20MB" not in driver.find_element(By.TAG_NAME, "body").text:
            time.sleep(0.5)
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "20MB per file" in body and "200MB" not in body, body[-300:]
    finally:
        if driver is not None:
            driver.quit()
        stop_app(app)
    # a clean stop removes the record
    assert not record_file.exists()
