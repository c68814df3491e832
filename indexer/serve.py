"""``indexer serve``: one process owns the Milvus Lite database and serves it over gRPC.

Milvus Lite lets one process open a database; serving it lets a build and the app share it.
Unlike ``milvus-lite server`` (which binds 0.0.0.0), this binds 127.0.0.1 unless told otherwise:
the server has no authentication.
"""
from __future__ import annotations

import logging
import signal
from pathlib import Path

from .store import DatabaseLocked, lite_lock_holder

log = logging.getLogger(__name__)


def serve(data_dir: str, host: str = "127.0.0.1", port: int = 19530) -> int:
    from milvus_lite.adapter.grpc.server import start_server_in_thread
    path = Path(data_dir)
    if lite_lock_holder(path):
        raise DatabaseLocked(f"{path} is already open in another process (a build, the app, or another serve)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: anyone who can reach this machine can read and change the database", host)
    server, db, bound = start_server_in_thread(data_dir=str(path), host=host, port=port)
    print(f"serving {path} on {host}:{bound}; use --uri http://127.0.0.1:{bound} (Ctrl-C to stop)", flush=True)

    stop = {"now": False}

    def _stop(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop["now"]:
            signal.pause() if hasattr(signal, "pause") else __import__("time").sleep(1)
    finally:
        server.stop(grace=5).wait()
        db.close()
        print("stopped; database closed cleanly", flush=True)
    return 0
