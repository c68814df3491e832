"""A bad --uri as a newcomer types it: an ordinary file, a path that does not exist (issue 39, item 4)."""

from __future__ import annotations

import pytest
from support.cli import run


@pytest.mark.parametrize("command", [["status"], ["drop", "--model", "effnet-lite0", "--split", "val"]])
def test_an_ordinary_file_is_not_a_milvus_lite_database(command, tmp_path):
    db = tmp_path / "w.db"
    db.write_text("hi\n")
    p = run(["indexer", *command, "--uri", str(db)], cwd=tmp_path, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"error: {db} is not a Milvus Lite database" in p.stderr, p.stderr
    assert "read-only" not in p.stderr and "not writable" not in p.stderr and "Traceback" not in p.stderr
    assert db.read_text() == "hi\n"


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["status", "--json"],
        ["drop", "--model", "effnet-lite0", "--split", "val", "--yes"],
        ["search", "--model", "effnet-lite0", "--split", "val", "--image", "q.jpg"],
        ["evaluate", "--split", "val", "--models", "effnet-lite0"],
        ["maps", "--split", "val"],
        ["robustness", "--split", "val", "--models", "effnet-lite0"],
    ],
)
def test_a_read_only_command_on_a_missing_database_creates_nothing_and_says_so(command, tmp_path):
    uri = tmp_path / "no" / "such" / "dir" / "x.db"
    p = run(["indexer", *command, "--uri", str(uri)], cwd=tmp_path, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"error: there is no Milvus Lite database at {uri}, and this command creates none" in p.stderr, p.stderr
    assert "python -m indexer build --model all --split val --dataset tiny-imagenet --limit 1000" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "no").exists(), "nothing created"
    assert sorted(x.name for x in tmp_path.iterdir()) == [], list(tmp_path.iterdir())
