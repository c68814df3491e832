"""The smaller points a newcomer hit (issue 39, item 9): drop confirms, a bad --limit is one line, an empty split
or an unreachable server fails before any model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from support.cli import repo_env as env
from support.cli import run
from support.data import make_tiny_layout

from benchmarks.synthetic import synthetic_meta
from embed.common.identity import EmbeddingKey

# the CLI as `python -m` runs it, then whether torch was imported (a model loads only after torch is)
PROBE = """
import json, runpy, sys
sys.argv = [sys.argv[1]] + sys.argv[2:]
code = 0
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
print("\\nPROBE " + json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def probe(*argv, cwd):
    p = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], cwd=cwd, env=env(), capture_output=True, text=True, timeout=300
    )
    line = [line for line in p.stdout.splitlines() if line.startswith("PROBE ")][-1]
    return json.loads(line[6:]), p.stderr


@pytest.fixture
def one_collection(tmp_path):
    from milvus_lite.server_manager import server_manager_instance

    from indexer.milvus_store import VectorStore

    root = make_tiny_layout(tmp_path / "data")
    uri = str(tmp_path / "milvus.db")
    store = VectorStore(uri)
    name = EmbeddingKey("effnet-lite0", root.name, "val").collection_name
    store.ensure_collection(name, synthetic_meta("effnet-lite0", 4, root.name, str(root), rows=6, complete=True))
    store.upsert(name, np.arange(6), np.ones((6, 4), np.float32), ["a"] * 6, [f"{i}.jpg" for i in range(6)], False)
    store.flush(name)
    store.close()
    server_manager_instance.release_all()
    return {"uri": uri, "name": name}


def _drop(uri, *extra, **kw):
    return ["indexer", "drop", "--model", "effnet-lite0", "--split", "val", "--uri", uri, *extra]


def _still_there(uri, cwd) -> bool:
    return "1 collection(s)" in run(["indexer", "status", "--uri", uri], cwd=cwd, timeout=120).stdout


def test_drop_without_a_terminal_asks_for_yes_and_keeps_the_collection(one_collection, tmp_path):
    p = run(_drop(one_collection["uri"]), cwd=tmp_path, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == (
        f"error: drop deletes {one_collection['name']} (6 rows: effnet-lite0 on data/val) for good; no terminal "
        f"here to confirm it: pass --yes"
    )
    assert _still_there(one_collection["uri"], tmp_path)
    p = run(_drop(one_collection["uri"], "--yes"), cwd=tmp_path, timeout=120)
    assert p.returncode == 0 and f"dropped {one_collection['name']}" in p.stdout
    assert not _still_there(one_collection["uri"], tmp_path)


@pytest.mark.parametrize("answer,dropped", [("n\n", False), ("\n", False), ("y\n", True)])
def test_drop_on_a_terminal_asks_first(one_collection, tmp_path, answer, dropped):
    primary, secondary = os.openpty()  # stdin is a terminal, as when a person types the command
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", *_drop(one_collection["uri"])],
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            env=env(),
            text=True,
        )
        os.write(primary, answer.encode())
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(primary)
        os.close(secondary)
    assert f"Drop {one_collection['name']} (6 rows: effnet-lite0 on data/val)?" in out and "[y/N]" in out
    assert proc.returncode == (0 if dropped else 1), out + err
    assert _still_there(one_collection["uri"], tmp_path) != dropped


@pytest.mark.parametrize(
    "argv,message",
    [
        (["indexer", "build", "--model", "effnet-lite0", "--split", "val", "--limit", "-5"], "argument --limit"),
        (["embed", "extract", "--model", "effnet-lite0", "--split", "val", "--limit", "-5"], "argument --limit"),
        (["indexer", "search", "--model", "vit", "--split", "val"], "the following arguments are required: --image"),
    ],
)
def test_a_usage_error_is_one_line_without_the_usage_block(argv, message, tmp_path):
    p = run(argv, cwd=tmp_path, timeout=60)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert message in p.stderr and f"(see python -m {argv[0]} {argv[1]} --help)" in p.stderr, p.stderr


def test_an_empty_split_folder_fails_before_the_model_loads(tmp_path):
    (tmp_path / "data" / "val" / "n01440764").mkdir(parents=True)
    report, stderr = probe(
        "indexer", "build", "--model", "effnet-lite0", "--split", "val", "--data-root", str(tmp_path / "data"),
        "--uri", str(tmp_path / "m.db"), cwd=tmp_path,
    )  # fmt: skip
    assert report["code"] == 2 and not report["torch"], stderr
    assert f"error: no images found in {tmp_path / 'data' / 'val'}" in stderr
    assert not (tmp_path / "m.db").exists()


def test_an_unreachable_server_fails_before_the_model_loads(tmp_path):
    root = make_tiny_layout(tmp_path / "data")
    from support.data import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    report, stderr = probe(
        "indexer", "build", "--model", "effnet-lite0", "--split", "val", "--data-root", str(root), "--uri", uri,
        cwd=tmp_path,
    )  # fmt: skip
    assert report["code"] == 2 and not report["torch"], stderr
    assert f"Milvus at {uri} is unreachable" in stderr
