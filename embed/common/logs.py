"""Third-party noise that looks like errors, silenced once per process (CLI, app, benchmarks).

Each line silenced here was seen in normal runs and means nothing to the user; real failures still
reach the user as exceptions with their own messages.
"""

from __future__ import annotations

import logging
import os


def quiet_grpc_environment() -> None:
    """Must run before grpc is imported (its C core reads these once)."""
    # DataLoader workers fork while gRPC threads run (the Milvus Lite server, our client): with fork
    # support on, grpc logs "fork_posix.cc ... skipping fork() handlers" at every fork. The workers never
    # use gRPC, so the fork handlers have nothing to do.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def quiet_third_party_logs() -> None:
    # "failed to get mvccTs from milvus server, use client-side ts instead" on every query iterator against
    # Milvus Lite, which has no MVCC timestamps. A child logger: pymilvus resets its own "pymilvus" logger when
    # it is imported (logging.config.dictConfig), which happens after this runs.
    logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
    # pymilvus logs every failed call as an ERROR with its traceback ("[_log_rpc_error]: RPC error: [flush] ...
    # Fail connecting to server", 60-80 lines when the process serving a shared Lite database exits). Every call
    # of this tool goes through VectorStore._retry, which says in one line that it retries, or raises the error
    # with its cause: pymilvus' own report is only ever a duplicate. Its configuration gives two children
    # levels of their own, hence each by name.
    for name in ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer", "pymilvus.decorators"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # Milvus Lite's in-process gRPC server logs a traceback for RPCs it does not implement (AllocTimestamp)
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    # their INFO lines (faiss loader, per-segment index builds, server start/stop, matplotlib's
    # "generated new fontManager" on first use, timm's "Loading pretrained weights from Hugging Face hub" even
    # when none are found) drown ours; embed.models.registry says once which weights were used
    for noisy in ("faiss", "faiss.loader", "milvus_lite", "httpx", "urllib3", "huggingface_hub", "matplotlib", "timm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
