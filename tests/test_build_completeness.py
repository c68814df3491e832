"""A collection short of rows is reported incomplete by ``indexer status`` and repaired by the next build.

Two ways to be short: a row deleted afterwards with the store's own client (the build had finished and said
complete), and a build whose rows do not all arrive (the backend takes fewer than were sent: the count after
the build comes up short). Neither may be called complete, and rerunning the build must restore every row.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.builds import MODEL, extract_config

from indexer.build import CountMismatch, build
from indexer.cli import main
from indexer.milvus_store import VectorStore

N = 12


@pytest.fixture
def setup(tmp_path, tiny_layout):
    root = tiny_layout(tmp_path / "ds", n_per_class=4, classes=("n01440764", "n01443537", "n01484850"))
    uri = str(tmp_path / "milvus.db")
    cfg = extract_config(root, tmp_path / "emb", shard_size=4)
    store = VectorStore(uri)
    yield store, cfg, uri
    store.close()


def _status(uri: str, capsys):
    """(the plain status line of the one collection, its --json entry)."""
    capsys.readouterr()
    assert main(["status", "--uri", uri]) == 0
    (line,) = [l for l in capsys.readouterr().out.splitlines() if MODEL.replace(":", "_") in l or "test_resnet" in l]
    assert main(["status", "--uri", uri, "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["collections"]
    return line, entry


def _assert_complete(store, name, uri, capsys):
    line, entry = _status(uri, capsys)
    assert "INCOMPLETE" not in line and entry["complete"] is True and entry["rows"] == N, (line, entry)
    ids, _, _, relpaths = store.read_all(name)
    assert ids.tolist() == list(range(N)) and len(set(relpaths)) == N


def test_a_deleted_row_is_reported_and_the_next_build_restores_it(setup, capsys):
    store, cfg, uri = setup
    first = build(cfg, store, progress=False)
    name = first.collection
    _assert_complete(store, name, uri, capsys)
    _, _, _, relpaths = store.read_all(name)

    store.client.delete(name, ids=[5])
    store.flush(name)
    line, entry = _status(uri, capsys)
    assert "INCOMPLETE" in line and f"{N - 1} of {N}" in line, line
    assert entry["complete"] is False and entry["rows"] == N - 1, entry

    again = build(cfg, store, progress=False)
    assert not again.already_complete and again.rows == N, "a collection short of a row is not 'already complete'"
    _assert_complete(store, name, uri, capsys)
    assert store.get_rows(name, [5])[0]["relpath"] == relpaths[5], "the deleted row came back as it was"


def test_a_count_that_comes_up_short_fails_the_build_and_is_repaired(setup, capsys, monkeypatch):
    store, cfg, uri = setup
    real_upsert = VectorStore.upsert

    def loses_one_row(self, name, ids, vectors, class_ids, relpaths, **kw):
        # a backend that acknowledges the rows but keeps one fewer
        keep = np.arange(len(ids)) != len(ids) // 2
        real_upsert(
            self,
            name,
            np.asarray(ids)[keep],
            np.asarray(vectors)[keep],
            [c for c, k in zip(class_ids, keep) if k],
            [p for p, k in zip(relpaths, keep) if k],
            **kw,
        )
        return len(ids)

    monkeypatch.setattr(VectorStore, "upsert", loses_one_row)
    with pytest.raises(CountMismatch, match=f"{N - 1} rows after the build, expected {N}"):
        build(cfg, store, progress=False)
    monkeypatch.setattr(VectorStore, "upsert", real_upsert)

    line, entry = _status(uri, capsys)
    assert "INCOMPLETE" in line and entry["complete"] is False and entry["rows"] == N - 1, (line, entry)
    name = entry["collection"]
    assert store.meta(name).complete is False, "a build whose count came up short is not recorded complete"

    again = build(cfg, store, progress=False)
    assert not again.already_complete and again.rows == N
    _assert_complete(store, name, uri, capsys)
