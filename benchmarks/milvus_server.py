"""The embedded Milvus standalone server (PyPI `milvus`), as benchmarks and tests run it (not used by the product).

It cannot be told to bind loopback only, so every one of its ports is a random free one and callers
keep it alive no longer than they need it. Start-up is judged by the server's own health check (GET /healthz on
its metrics port, the endpoint the package's ``wait_started`` polls): on a loaded machine the server takes
minutes, so the wait ends when it is healthy or its process has died, and only a generous deadline
(``MILVUS_START_TIMEOUT_S``, default 900 s) stops a server that never becomes healthy.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

START_TIMEOUT_S = float(os.environ.get("MILVUS_START_TIMEOUT_S", 900))


class ServerDidNotStart(RuntimeError):
    """The embedded server exited, or was not healthy by the deadline; the message says which and where its log is."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def health_url(server) -> str:
    # the package passes this port to the server as METRICS_PORT; /healthz answers "OK" once every component is up
    return f"http://127.0.0.1:{server.webservice_port}/healthz"


def wait_healthy(server, timeout_s: float = START_TIMEOUT_S, poll_s: float = 0.5) -> float:
    """Seconds until ``server`` (started with ``wait_for_started=False``) answered its health check."""
    url, started = health_url(server), time.monotonic()
    log = Path(server.config.base_data_dir) / "logs" / "milvus-stderr.log"
    last = "no answer yet"
    while True:
        code = server.server_proc.poll() if server.server_proc is not None else "not started"
        if code is not None:
            raise ServerDidNotStart(f"the milvus process exited (status {code}) before it was healthy; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body = resp.read().decode("utf-8", "replace")
            if "OK" in body and _accepts(int(server.listen_port)):
                return time.monotonic() - started
            last = f"answered {body[:80]!r}" if "OK" not in body else f"proxy port {server.listen_port} closed"
        except (urllib.error.URLError, OSError) as e:
            last = str(getattr(e, "reason", e))
        if time.monotonic() - started > timeout_s:
            raise ServerDidNotStart(
                f"not healthy after {timeout_s:.0f} s ({url}: {last}); see {log}, or raise MILVUS_START_TIMEOUT_S"
            )
        time.sleep(poll_s)


def _config_with_own_etcd_ports(base_dir: Path):
    """The package's server config, with its embedded etcd on free ports too.

    Left alone, the embedded etcd listens on etcd's fixed defaults (127.0.0.1:2379 and :2380), so a second server
    on the machine (another test run) dies at start-up ("bind: address already in use"). Milvus takes an etcd
    config file (``etcd.config.path``) that the package's template has no key for: a copy of the template gets one.
    """
    import milvus
    from milvus import MilvusServerConfig

    base_dir.mkdir(parents=True, exist_ok=True)
    template = Path(milvus.__file__).parent / "data" / "config.yaml.template"
    text = template.read_text(encoding="utf-8")
    if "\netcd:\n" not in text:
        return None  # another package version: keep its own template
    own = base_dir / "config.yaml.template"
    own.write_text(
        text.replace("\netcd:\n", "\netcd:\n  config:\n    path: {{ etcd_config_path }}\n", 1), encoding="utf-8"
    )
    client, peer = free_port(), free_port()
    etcd = base_dir / "embed-etcd.yaml"
    etcd.write_text(
        f"listen-client-urls: http://127.0.0.1:{client}\nadvertise-client-urls: http://127.0.0.1:{client}\n"
        f"listen-peer-urls: http://127.0.0.1:{peer}\ninitial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
        f"initial-cluster: default=http://127.0.0.1:{peer}\n",
        encoding="utf-8",
    )
    config = MilvusServerConfig(template=str(own))
    config.glog_conf_file = str(template.parent / "glog.conf")  # the package sets it only for its own template
    config.set("etcd_config_path", str(etcd))
    return config


def start_embedded_milvus(base_dir: Path, timeout_s: float = START_TIMEOUT_S):
    """A healthy ``milvus.MilvusServer`` keeping its data under ``base_dir``; ``listen_port`` is its proxy port.

    Raises ServerDidNotStart (the server stopped again) when it does not become healthy."""
    from milvus import MilvusServer

    server = MilvusServer(_config_with_own_etcd_ports(Path(base_dir) / "etc"), wait_for_started=False)
    server.set_base_dir(str(base_dir))
    for key in server.config_keys:
        if key.endswith("_port"):
            server.config.set(key, free_port())
    server.listen_port = server.config.get("proxy_port")
    try:
        server.start()
        server.startup_seconds = wait_healthy(server, timeout_s)
    except BaseException:
        server.stop()
        raise
    return server
