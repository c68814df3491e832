"""``indexer serve``: one process owns the Milvus Lite database and serves it over gRPC.

Every process of this tool already shares a Lite database on its own (see ``shared_lite``): the first
one to open it serves it to the others while it runs. ``serve`` is for a fixed, explicit address
(``--uri http://127.0.0.1:PORT``, e.g. for other Milvus clients) and for a database that must stay
served with no app running. It publishes its address too, so commands on the default path use it.
Unlike ``milvus-lite server`` (which binds 0.0.0.0), this binds 127.0.0.1 unless told otherwise:
the server has no authentication.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from indexer.milvus_store import DatabaseLocked, DatabaseReadOnly
from indexer.shared_lite import live_record, lock_held, publish, unpublish, writable_problem

log = logging.getLogger(__name__)


def serve(data_dir: str, host: str = "127.0.0.1", port: int = 19530) -> int:
    from milvus_lite.adapter.grpc.server import start_server_in_thread

    path = Path(os.path.abspath(data_dir))
    rec = live_record(path)
    if rec is not None:
        raise DatabaseLocked(
            f"{data_dir} is already open: pid {rec.pid} serves it on {rec.host}:{rec.port}; "
            f"commands on {data_dir} use it as it is, other clients can use --uri {rec.uri}"
        )
    if lock_held(path):
        raise DatabaseLocked(f"{data_dir} is already open in another process that does not share it; stop it first")
    problem = writable_problem(path)
    if problem:
        raise DatabaseReadOnly(f"{data_dir} is in a read-only location ({problem}); Milvus Lite must write there")
    path.parent.mkdir(parents=True, exist_ok=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: anyone who can reach this machine can read and change the database", host)
    server, db, bound = start_server_in_thread(data_dir=str(path), host=host, port=port)
    publish(path, bound, "127.0.0.1" if host in ("0.0.0.0", "::", "localhost") else host)
    print(
        f"serving {data_dir} on {host}:{bound}; commands on {data_dir} use it automatically, other clients: "
        f"--uri http://127.0.0.1:{bound} (Ctrl-C to stop)",
        flush=True,
    )

    stop = {"now": False}

    def _stop(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop["now"]:
            signal.pause() if hasattr(signal, "pause") else __import__("time").sleep(1)
    finally:
        unpublish(path)
        server.stop(grace=5).wait()
        db.close()
        print("stopped; database closed cleanly", flush=True)
    return 0
