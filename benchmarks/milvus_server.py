"""The embedded Milvus standalone server (PyPI `milvus`), as benchmarks and tests run it (not used by the product).

It cannot be told to bind loopback only, so every one of its ports is a random free one and callers
keep it alive no longer than they need it.
"""
from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_embedded_milvus(base_dir: Path):
    """A started ``milvus.MilvusServer`` keeping its data under ``base_dir``; ``listen_port`` is its proxy port."""
    from milvus import MilvusServer
    server = MilvusServer()
    server.set_base_dir(str(base_dir))
    for key in server.config_keys:
        if key.endswith("_port"):
            server.config.set(key, free_port())
    server.listen_port = server.config.get("proxy_port")
    server.start()
    return server
