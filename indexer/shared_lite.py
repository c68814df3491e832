"""One Milvus Lite database shared by every local process (the app, builds, searches).

Milvus Lite lets one process open a ``.db`` folder (an flock on ``<db>/LOCK``). pymilvus already
serves each opened folder from an in-process gRPC server on 127.0.0.1 (``milvus_lite.server_manager``)
and talks to it over gRPC. So the process that opens the folder first (the owner) writes where that
server listens next to the database, ``<db>.server.json`` (pid, port), and every later process
connects to that address instead of opening the folder.

Ownership rule: the owner serves the database for as long as it runs and nothing longer; when it
exits the record is removed and the next process to need the database becomes the owner. A client
whose owner went away reconnects through :func:`resolve` (see ``VectorStore._reconnect``). A record
whose pid is dead, or whose port no longer answers, is stale and deleted on sight.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
RECORD_SUFFIX = ".server.json"


class LiteOpenError(RuntimeError):
    """Why a Lite folder could not be opened; ``kind`` is 'locked', 'read-only', 'missing', 'not-a-database' or
    'failed'."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class ServerRecord:
    pid: int
    port: int
    host: str
    path: str
    started: float

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"


def record_path(db: Path) -> Path:
    return db.with_name(db.name + RECORD_SUFFIX)


def read_record(db: Path) -> Optional[ServerRecord]:
    try:
        data = json.loads(record_path(db).read_text())
        return ServerRecord(
            int(data["pid"]), int(data["port"]), str(data["host"]), str(data["path"]), float(data.get("started", 0))
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def lock_held(db: Path) -> bool:
    """Whether some process (this one included) holds Milvus Lite's advisory lock on ``db``."""
    lock = db / "LOCK"
    if not lock.exists():
        return False
    import fcntl

    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _remove_record(db: Path, only_pid: Optional[int] = None) -> None:
    rec = read_record(db)
    if only_pid is not None and (rec is None or rec.pid != only_pid):
        return
    try:
        record_path(db).unlink()
    except OSError:
        pass


def live_record(db: Path) -> Optional[ServerRecord]:
    """The recorded server for ``db`` if its process is alive and its port answers; stale records are removed."""
    rec = read_record(db)
    if rec is None:
        return None
    if rec.pid != os.getpid() and not pid_alive(rec.pid):
        log.info("removing stale server record %s (pid %d is gone)", record_path(db), rec.pid)
        _remove_record(db, only_pid=rec.pid)
        return None
    if not port_answers(rec.host, rec.port):
        if not lock_held(db):  # the pid was reused by an unrelated process
            log.info("removing stale server record %s (port %d closed, database not open)", record_path(db), rec.port)
            _remove_record(db, only_pid=rec.pid)
        return None
    return rec


def writable_problem(db: Path) -> Optional[str]:
    """Why Milvus Lite could not write at ``db`` (it must, even to read: LOCK file, WAL), or None."""
    if db.exists():
        target = db
    else:
        target = db.parent
        while not target.exists() and target != target.parent:
            target = target.parent
    try:
        if os.statvfs(target).f_flag & os.ST_RDONLY:
            return f"{target} is on a read-only file system"
    except OSError:
        pass
    if not os.access(target, os.W_OK | os.X_OK):
        return f"{target} is not writable by this user"
    lock = db / "LOCK"
    if lock.exists() and not os.access(lock, os.W_OK):
        return f"{lock} is read-only for this user"
    return None


_owned: Dict[str, ServerRecord] = {}


def _open_here(db: Path) -> ServerRecord:
    """Open ``db`` in this process through pymilvus' own server manager and publish its address."""
    from milvus_lite.server_manager import server_manager_instance

    failure = _capture_failure("milvus_lite.server_manager")
    try:
        uri = server_manager_instance.start_and_get_uri(str(db))
    finally:
        failure.detach()
    if uri is None:
        exc = failure.exc
        if exc is not None and type(exc).__name__ == "DataDirLockedError":
            raise LiteOpenError("locked", str(exc))
        if isinstance(exc, OSError) and exc.errno in (13, 30):  # EACCES, EROFS
            raise LiteOpenError("read-only", f"{exc.strerror}: {exc.filename or db}")
        raise LiteOpenError("failed", f"{type(exc).__name__}: {exc}" if exc else "see the log above")
    rec = publish(db, int(uri.rsplit(":", 1)[1]))
    _owned[str(db)] = rec
    return rec


def publish(db: Path, port: int, host: str = LOOPBACK) -> ServerRecord:
    """Record that this process serves ``db`` on ``host:port``; the record is removed when the process exits."""
    rec = ServerRecord(os.getpid(), port, host, str(db), time.time())
    try:
        tmp = record_path(db).with_name(record_path(db).name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(rec)))
        os.replace(tmp, record_path(db))
    except OSError as e:
        log.warning("could not record where %s is served (%s): other processes cannot share it", db, e)
    else:
        # registered after pymilvus' own atexit hook, so it runs first: the record goes before the server stops
        atexit.register(_remove_record, db, os.getpid())
    log.debug("serving %s to other processes on %s:%d", db, host, port)
    return rec


def unpublish(db: Path) -> None:
    _remove_record(db, only_pid=os.getpid())


class _capture_failure(logging.Handler):
    """Takes the exception the server manager logs (and would print as a traceback) instead of printing it."""

    def __init__(self, logger_name: str):
        super().__init__(logging.ERROR)
        self.exc: Optional[BaseException] = None
        self._logger = logging.getLogger(logger_name)
        self._propagate = self._logger.propagate
        self._logger.addHandler(self)
        self._logger.propagate = False

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.exc = record.exc_info[1]

    def detach(self) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate = self._propagate


def served_here(db: Path) -> Optional[str]:
    """The address if this process already serves ``db`` (opened by us, or by a plain MilvusClient(path))."""
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return None
    # pymilvus' manager is the truth: a test may have released its servers behind our back
    entry = getattr(server_manager_instance, "_servers", {}).get(str(db))
    if entry is None:
        if _owned.pop(str(db), None) is not None:
            _remove_record(db, only_pid=os.getpid())
        return None
    return f"http://{LOOPBACK}:{entry[2]}"


def resolve(db_path: str, wait_s: float, create: bool = True) -> str:
    """The gRPC address to use for the Lite database at ``db_path``: a live owner's, or this process' own.
    ``wait_s``: how long to wait for a process that holds the lock to publish its address (it may be starting up;
    RETRIEVAL_LITE_WAIT_S).

    ``create=False`` (the commands that only read): a database that does not exist yet is an error, not a new
    empty one with its folders. Raises LiteOpenError('read-only' | 'locked' | 'missing' | 'not-a-database' |
    'failed') when neither is possible.
    """
    db = Path(os.path.abspath(db_path))
    if db.exists() and not db.is_dir():  # Milvus Lite's database is a folder: a file there is something else
        raise LiteOpenError("not-a-database", f"{db} is a file, and a Milvus Lite database is a folder")
    if not create and not db.exists():
        raise LiteOpenError("missing", f"{db} does not exist")
    here = served_here(db)
    if here:
        return here
    deadline = time.monotonic() + wait_s
    while True:
        rec = live_record(db)
        if rec is not None:
            log.debug("%s is served by pid %d on %s", db, rec.pid, rec.uri)
            return rec.uri
        if not lock_held(db):
            problem = writable_problem(db)
            if problem:
                raise LiteOpenError("read-only", problem)
            db.parent.mkdir(parents=True, exist_ok=True)
            try:
                return _open_here(db).uri
            except LiteOpenError as e:
                if e.kind != "locked":  # lost a race for the lock: the winner publishes its address shortly
                    raise
        if time.monotonic() > deadline:
            raise LiteOpenError("locked", f"{db} is open in another process that does not share it")
        time.sleep(0.2)


def release(db_path: str) -> None:
    """Stop serving ``db_path`` from this process (tests; the process exit does it anyway)."""
    db = Path(os.path.abspath(db_path))
    rec = _owned.pop(str(db), None)
    if rec is None:
        return
    unpublish(db)
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(db))
