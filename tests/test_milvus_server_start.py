"""How the server tests treat an embedded Milvus server that does not start: said in the skip, failed under CI.

The server itself is started once per session by the ``milvus_server`` fixture and judged by its health
endpoint (benchmarks.milvus_server); these tests check the two ends that a healthy server never exercises.
"""

from __future__ import annotations

import pytest
from support.milvus import server_unavailable


def test_an_unavailable_server_skips_with_the_reason_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="did not start: because"):
        server_unavailable("the embedded Milvus server did not start: because")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="did not start: because.*CI is set"):
        server_unavailable("the embedded Milvus server did not start: because")


@pytest.mark.server
def test_a_server_not_healthy_by_the_deadline_is_reported_and_stopped(tmp_path):
    try:
        import milvus
    except ImportError:
        server_unavailable("the `milvus` package (embedded Milvus server) is not installed")
    from benchmarks.milvus_server import ServerDidNotStart, start_embedded_milvus

    started = []
    real_start = milvus.MilvusServer.start

    def start(self):
        real_start(self)
        started.append(self.server_proc)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(milvus.MilvusServer, "start", start)
        with pytest.raises(ServerDidNotStart, match=r"not healthy after 0 s \(http://127\.0\.0\.1:\d+/healthz"):
            start_embedded_milvus(tmp_path / "server", timeout_s=0)
    (proc,) = started
    assert proc.poll() is not None, "the server that never became healthy is stopped"
