"""A server address that cannot answer however long one waits fails at once with the clear message; what can heal
(a server starting up, one restarting) is still waited for; warning lines are never cut mid-word."""

import logging
import subprocess
import sys
import threading
import time

import pytest
from support.cli import repo_env
from support.data import free_port, make_tiny_layout
from support.logs import RecordedRetries

from indexer.milvus_store import ServerUnreachable, VectorStore, brief


def _fails_fast(uri: str) -> str:
    """The message for ``uri``, checked to come at once: before any client connects (whose own timeout would be
    waited out) and with no retry, however slow the machine is."""
    from unittest import mock

    retries = RecordedRetries()
    store = VectorStore(uri)
    with (
        retries,
        mock.patch("pymilvus.MilvusClient", side_effect=AssertionError("a client was made: its connect waits")),
        pytest.raises(ServerUnreachable) as e,
    ):
        store.list_collections()
    assert retries.messages == [], "a refusal that cannot heal is not retried"
    return str(e.value)


def test_a_refused_local_port_fails_at_once_with_the_clear_message():
    port = free_port()  # nothing listens there
    message = _fails_fast(f"http://127.0.0.1:{port}")
    assert message == (
        f"Milvus at http://127.0.0.1:{port} is unreachable (connection refused: nothing listens on "
        f"127.0.0.1 port {port}). Is the server running? Check --uri / RETRIEVAL_MILVUS_URI."
    )
    assert "localhost port" in _fails_fast(f"http://localhost:{port}")


def test_a_host_name_that_does_not_resolve_fails_at_once():
    message = _fails_fast("http://no-such-host.invalid:19530")  # .invalid never resolves (RFC 2606)
    assert "host name 'no-such-host.invalid' not found" in message and "Check --uri" in message


@pytest.mark.parametrize("command", ["status", "search", "build"])
def test_each_command_reports_a_refused_address_without_retrying(command, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    root = make_tiny_layout(tmp_path / "data")
    args = {
        "status": [],
        "search": ["--model", "effnet-lite0", "--split", "val", "--image", "q.jpg"],
        "build": ["--model", "effnet-lite0", "--split", "val", "--data-root", str(root)],
    }[command]
    res = subprocess.run(
        [sys.executable, "-m", "indexer", command, *args, "--uri", uri],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=repo_env(),
        timeout=120,
    )
    assert res.returncode == 2
    assert f"error: Milvus at {uri} is unreachable (connection refused" in res.stderr
    assert "retrying" not in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_warning_lines_are_shortened_at_a_word_boundary(caplog):
    text = (
        "<MilvusException: (code=2, message=Fail connecting to server on 127.0.0.1:19530, illegal connection "
        "params or server unavailable)> " * 3
    ).strip()
    short = brief(ConnectionError(text), width=120)
    assert len(short) <= 120 and short.endswith(" ...")
    words = short[: -len(" ...")].split()
    assert words == text.split()[: len(words)], "whole words only"

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError(text)
        return "ok"

    store = VectorStore("http://127.0.0.1:19530", backoff=0.01)
    with caplog.at_level(logging.WARNING, logger="indexer.milvus_store"):
        assert store._retry(flaky, "list collections") == "ok"
    [line] = [r.getMessage() for r in caplog.records]
    shown = line.split("failed (", 1)[1].rsplit("); retrying", 1)[0]
    assert shown.endswith(" ...") and shown[:-4].split() == text.split()[: len(shown[:-4].split())]


@pytest.mark.parametrize("retries", ["0", "2"])
def test_the_retry_count_comes_from_the_environment(retries, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_MILVUS_RETRIES", retries)
    calls = []

    def down():
        calls.append(1)
        raise ConnectionError("server unavailable")

    store = VectorStore("http://127.0.0.1:19530", backoff=0.01)
    with pytest.raises(ServerUnreachable) as e:
        store._retry(down, "list collections")
    assert len(calls) == int(retries) + 1
    assert f"list collections failed {int(retries) + 1} times" in str(e.value)


@pytest.mark.parametrize(
    "value,message",
    [
        ("two", "RETRIEVAL_MILVUS_RETRIES='two' is not a number"),
        ("-1", "RETRIEVAL_MILVUS_RETRIES='-1': needs at least 0"),
    ],
)
def test_a_bad_retry_count_is_one_clear_error(value, message, tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "indexer", "status", "--uri", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=repo_env(RETRIEVAL_MILVUS_RETRIES=value),
        timeout=120,
    )
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1] == f"error: {message}", res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.server
def test_a_server_that_comes_up_within_the_window_is_reached(milvus_server):
    """A listening front whose server is not there yet (a server starting up), then there: waited for."""
    from support.tcp_proxy import TcpProxy

    behind = free_port()
    front = TcpProxy(behind, free_port()).start()  # accepts, but nothing answers behind it yet
    server = TcpProxy(milvus_server.listen_port, behind)
    timer = threading.Timer(3.0, server.start)
    timer.start()
    try:
        t = time.perf_counter()
        names = VectorStore(f"http://127.0.0.1:{front.port}", backoff=0.5).list_collections()
        assert isinstance(names, list) and time.perf_counter() - t >= 3
    finally:
        timer.join()
        front.stop()
        server.stop()


@pytest.mark.server
def test_a_refusal_after_a_first_connection_is_a_restart_and_is_retried(milvus_server, caplog):
    from support.tcp_proxy import TcpProxy

    proxy = TcpProxy(milvus_server.listen_port, free_port()).start()
    try:
        store = VectorStore(f"http://127.0.0.1:{proxy.port}", backoff=0.5)
        store.list_collections()
        proxy.stop()  # the server goes away: connections refused ...
        timer = threading.Timer(2.0, proxy.start)  # ... and it comes back on the same port
        timer.start()
        with caplog.at_level(logging.WARNING, logger="indexer.milvus_store"):
            assert isinstance(store.list_collections(), list)
        timer.join()
    finally:
        proxy.stop()
