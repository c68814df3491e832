"""The shared Lite database's owner record: a record whose process is gone is stale, whatever answers its port.

A port is only a number: after the owner died, anything may listen there (another program, a later server).
Only the pid says whether the owner lives, so a dead pid must remove the record even when a plain TCP listener
answers on the recorded port; a client that trusted the port would connect to that listener and hang.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from indexer import shared_lite


@pytest.fixture
def listener():
    """A plain TCP listener on 127.0.0.1 (it accepts connections and never speaks gRPC)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid():
    """Another process that is alive for the test (not this one: the owner check treats its own pid apart)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _write_record(db: Path, pid: int, port: int) -> Path:
    path = shared_lite.record_path(db)
    path.write_text(json.dumps({"pid": pid, "port": port, "host": "127.0.0.1", "path": str(db), "started": 0}))
    return path


def test_dead_owner_is_stale_even_when_its_port_answers(tmp_path, listener, dead_pid):
    db = tmp_path / "milvus.db"
    record = _write_record(db, dead_pid, listener)
    assert shared_lite.port_answers("127.0.0.1", listener), "the listener answers on the recorded port"
    assert shared_lite.live_record(db) is None, "a record whose pid is gone is not a live owner"
    assert not record.exists(), "the stale record is removed"


def test_resolve_opens_the_database_itself_instead_of_connecting_to_the_listener(tmp_path, listener, dead_pid):
    db = tmp_path / "milvus.db"
    _write_record(db, dead_pid, listener)
    try:
        address = shared_lite.resolve(str(db), wait_s=5)
        assert address != f"http://127.0.0.1:{listener}", "connected to whatever answered on the dead owner's port"
        now = shared_lite.read_record(db)
        assert now is not None and now.pid == os.getpid() and now.port != listener
    finally:
        shared_lite.release(str(db))


def test_live_owner_is_kept_and_a_live_pid_with_a_closed_port_is_not(tmp_path, listener, live_pid):
    """The other side of the rule, so that removing every record cannot pass: a live pid whose port answers is
    the owner; a live pid whose port is closed while nobody holds the database is an unrelated process."""
    db = tmp_path / "milvus.db"
    record = _write_record(db, live_pid, listener)
    rec = shared_lite.live_record(db)
    assert rec is not None and (rec.pid, rec.port) == (live_pid, listener) and record.exists()

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # bound once, now nobody listens there
    record = _write_record(db, live_pid, port)
    assert shared_lite.live_record(db) is None and not record.exists()
