"""The vector store: one Milvus collection per model and dataset/split, L2 metric, FLAT index unless built otherwise
(indexer.index_spec).

The same code talks to Milvus Lite (a local ``.db`` folder, the default), a Milvus standalone or
distributed server, or Zilliz Cloud: only the URI (and token) differ.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import socket
import textwrap
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Collection, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

import numpy as np
import numpy.typing as npt

from embed.common.identity import (
    EmbeddingKey,
    InvalidName,
    VectorSetIdentity,
    record_from_dict,
    regroup_flat_identity,
    validate_collection_name,
)
from embed.common.settings import RetrievalSettings, given_or_current
from embed.extraction.shards import Manifest
from indexer.index_spec import IndexSpec, at_least_limit

log = logging.getLogger(__name__)

META_KEY = "retrieval.meta"
DEFAULT_SEARCH_BUDGET = 1 << 30  # bytes Milvus Lite may spend on one search call (nq x N x dim floats)
MAX_PATH_LEN = 2048
MAX_CLASS_LEN = 256
# a collection's scratch copy that `indexer ann` builds indexes on: never listed as a collection of the tool's
ANN_SCRATCH_SUFFIX = "__ann_scratch"


class StoreError(RuntimeError):
    """Expected vector-store failures: the message says what to do."""


class DatabaseLocked(StoreError):
    pass


class DatabaseReadOnly(StoreError):
    pass


class ServerUnreachable(StoreError):
    pass


class MetadataMismatch(StoreError):
    pass


class DatabaseMissing(StoreError):
    """A command that only reads was pointed at a Lite database that does not exist (and created none)."""


@dataclass
class CollectionMeta:
    """What a collection holds, stored in its properties: the vectors' identity and where their images are."""

    identity: VectorSetIdentity
    data_root: str
    layout: str = ""  # the data layout the images were read in
    weights_detail: str = ""  # the weights file's path or hub id, to load them again for queries
    rows: int = 0  # rows after the last completed build
    complete: bool = False
    images: Optional[int] = None  # images the last build covered (its --limit, or the split); None: not recorded
    metric: str = "L2"
    index: IndexSpec = field(default_factory=IndexSpec)  # the collection's, not the vectors': not in the identity
    labels: str = "layout"  # the LabelSource (embed.sources.datasets) as text: where class_ids came from
    whitening_path: str = ""  # the learned whitening's artifact (its fingerprint is in the identity), for queries

    @property
    def model(self) -> str:
        return self.identity.model

    @property
    def dataset(self) -> str:
        return self.identity.dataset

    @property
    def split(self) -> str:
        return self.identity.split

    @property
    def dim(self) -> int:
        return self.identity.dim

    @property
    def normalized(self) -> bool:
        return self.identity.normalized

    @property
    def is_random(self) -> bool:
        return self.identity.is_random

    @property
    def key(self) -> EmbeddingKey:
        return self.identity.key

    def complete_with(self, live_rows: int) -> bool:
        """Whether a collection holding ``live_rows`` now is whole: its last build finished and no row went since
        (rows deleted, or a count that came up short, make it incomplete again whatever the flag says)."""
        return self.complete and live_rows == self.rows

    @property
    def label_source(self):
        from embed.sources.datasets import LabelSource

        return LabelSource.parse(self.labels)

    def labels_text(self, class_ids) -> str:
        """How this collection's images are labelled, in words (``class_ids``: its rows' labels): what every output
        says. Fewer than two classes is said to be unlabelled, as it is evaluated."""
        from embed.sources.datasets import labelled

        source = self.label_source
        if source.kind == "none":
            return source.describe()
        if not labelled(class_ids):
            return f"{source.describe(self.layout)}, but fewer than two classes: evaluated as unlabelled"
        return f"{source.describe(self.layout)}, {len(set(class_ids))} classes"

    @property
    def weights_label(self) -> str:
        """The weights as an evaluation report records them: where they came from and their fingerprint."""
        if self.is_random:
            return "RANDOM (--random-init)"
        return f"{self.identity.weights_source}: {self.identity.weights_fingerprint}"

    @classmethod
    def from_manifest(cls, manifest: Manifest, normalized: bool) -> "CollectionMeta":
        """The metadata of a collection built from these embeddings."""
        return cls(
            identity=manifest.identity.with_normalized(normalized),
            data_root=manifest.data_root,
            layout=manifest.layout,
            weights_detail=manifest.weights_detail,
            labels=manifest.labels,
        )

    def whitened(self, descriptor: str, whitening) -> "CollectionMeta":
        """This metadata for the rows after ``whitening`` (indexer.whitening.Whitening) under ``descriptor``
        (its key part, e.g. ``gem3-white512``): its fingerprint, output dimension and artifact path."""
        identity = replace(
            self.identity,
            descriptor=descriptor,
            whitening=whitening.identity.fingerprint,
            dim=whitening.identity.dim_out,
            normalized=True,
        )
        return replace(self, identity=identity, whitening_path=str(whitening.path or ""))

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "identity": self.identity.to_dict()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "CollectionMeta":
        data = json.loads(text)
        if "identity" not in data:
            # written before the identity was one field, with no transform or image list: such a collection
            # differs from any current build and is rebuilt (random weights) or needs --recreate
            data = regroup_flat_identity(data, data_fingerprint="(not recorded)", transform="(not recorded)")
        # written before the index was a spec: every collection then was FLAT
        index = IndexSpec.from_dict(data["index"]) if "index" in data else IndexSpec(data.get("index_type", "FLAT"))
        return record_from_dict(cls, {**data, "index": index})


def id_filter(within: Collection[int]) -> str:
    """The Milvus expression that keeps only rows whose id is in ``within``: a range of positions (the usual
    case, collections built to different --limit) as two comparisons, any other set as a list."""
    if isinstance(within, range) and within.step == 1:
        return f"id >= {int(within.start)} and id < {int(within.stop)}"
    return f"id in [{', '.join(str(int(i)) for i in sorted(within))}]"


def validate_name(name: str) -> str:
    """The collection-name rule of embed.common.identity, failing as a StoreError like every other store problem."""
    try:
        return validate_collection_name(name)
    except InvalidName as e:
        raise StoreError(str(e)) from None


def is_local_uri(uri: str) -> bool:
    return not re.match(r"^(https?|tcp|grpcs?|unix)://", uri)


def lite_lock_holder(path: Path) -> bool:
    """Whether a process holds Milvus Lite's advisory lock on ``path``."""
    from indexer.shared_lite import lock_held

    return lock_held(Path(path))


# pymilvus' default client keepalive (a ping every 10 s, even when idle) breaks the server's default
# policy (at most one ping per 5 min without calls): the server answers GOAWAY "too_many_pings" and
# grpc logs it as an error. No keepalive pings are needed on a loopback connection.
LOOPBACK_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 2**31 - 1, "grpc.keepalive_permit_without_calls": 0}


_TRANSIENT = (
    "connect",
    "unavailable",
    "deadline",
    "timeout",
    "timed out",
    "connection refused",
    "socket closed",
    "channel",
    "service not ready",
    "not ready",
    "broken pipe",
    "reset by peer",
    "rpc error",
)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, StoreError):  # already judged (locked, unreachable, mismatch): never retried again
        return False
    text = f"{type(exc).__name__} {exc}".lower()
    return any(t in text for t in _TRANSIENT)


def brief(exc: BaseException, width: int = 160) -> str:
    """An error's text on one line, shortened at a word boundary (never mid-word) to about ``width`` characters."""
    return textwrap.shorten(str(exc) or type(exc).__name__, width=width, placeholder=" ...")


def _is_local_address(address: str) -> bool:
    """Loopback, or an address of this machine's own interfaces (nothing else can answer there)."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if ip.is_loopback or ip.is_unspecified:
        return True
    try:
        own = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        return False
    return address in own


def permanent_connect_failure(uri: str, timeout: float = 2.0) -> Optional[str]:
    """Why a server URI cannot be reached however long one waits, or None when waiting may help.

    Two failures do not heal: a host name that does not resolve, and a refused connection on an address of
    this machine (nothing listens on that port; a remote refusal may be a load balancer between restarts).
    A timeout, or a server that accepts but is not ready yet, is left to the retries.
    """
    parsed = urlparse(uri)
    host = parsed.hostname
    if not host:
        return None
    try:
        port = parsed.port or (443 if parsed.scheme in ("https", "grpcs") else 19530)
    except ValueError:
        return f"invalid port in {uri!r}"
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"host name {host!r} not found: {e.strerror}"
    for family, kind, proto, _, address in addresses:
        if not _is_local_address(str(address[0])):
            return None
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
            return None
        except ConnectionRefusedError:
            continue
        except OSError:
            return None
    return f"connection refused: nothing listens on {host} port {port}"


class VectorStore:
    """A connection to one Milvus deployment (Lite folder or server URI), with retries."""

    def __init__(
        self,
        uri: Optional[str] = None,
        token: Optional[str] = None,
        retries: Optional[int] = None,
        backoff: float = 1.0,
        search_budget_bytes: int = DEFAULT_SEARCH_BUDGET,
        create: bool = True,
        settings: Optional[RetrievalSettings] = None,
    ):
        """``create=False``: a Lite database that does not exist is an error (DatabaseMissing) instead of being
        created empty, for the commands that only read (status, search, drop, evaluate, maps, robustness).
        ``settings``: the entry point's (the default URI, token, batch size, retries, Lite waits and advice, and
        for the code that reads this store, e.g. where weights are cached); a Python caller may pass none: the
        environment's."""
        self.settings = config = given_or_current(settings)
        self.uri = str(uri if uri is not None else config.milvus_uri)
        self.token = (token if token is not None else config.milvus_token) or ""
        self.max_batch_bytes = config.insert_batch_bytes
        self.retries = config.milvus_retries if retries is None else retries
        self.backoff = backoff
        self.search_budget_bytes = search_budget_bytes
        self.is_lite = is_local_uri(self.uri)
        self.create = create
        self._client = None
        self._connected_once = False  # after a first connection, a refusal is a server restarting: retried
        self._loaded: set = set()

    # connection ---------------------------------------------------------------------------------

    def describe_target(self) -> str:
        return f"Milvus Lite at {self.uri}" if self.is_lite else f"Milvus at {self.uri}"

    def sharing(self) -> str:
        """For a Lite database: which process serves it to the others (empty for a server URI)."""
        if not self.is_lite:
            return ""
        from indexer.shared_lite import read_record

        rec = read_record(Path(os.path.abspath(self.uri)))
        if rec is None:
            return ""
        return "served by this process" if rec.pid == os.getpid() else f"served by pid {rec.pid} on {rec.uri}"

    @property
    def client(self):
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self):
        # before importing pymilvus (a second): a wrong address is answered in a moment
        if not self.is_lite and not self._connected_once and (reason := permanent_connect_failure(self.uri)):
            raise self._unreachable(reason)
        from pymilvus import MilvusClient

        from embed.common.logs import quiet_third_party_logs

        quiet_third_party_logs()  # again: importing pymilvus has just reset its loggers (logging.config.dictConfig)
        if self.is_lite:
            return MilvusClient(self._lite_address(), grpc_options=LOOPBACK_GRPC_OPTIONS, timeout=30)
        # one attempt: every call already runs inside _retry, which retries a failed connect with backoff
        client = MilvusClient(self.uri, token=self.token, timeout=10)
        self._connected_once = True
        return client

    def _unreachable(self, detail: str) -> ServerUnreachable:
        return ServerUnreachable(
            f"{self.describe_target()} is unreachable ({detail}). Is the server running? "
            f"Check --uri / RETRIEVAL_MILVUS_URI."
        )

    def _lite_address(self) -> str:
        """Where this process reaches the Lite database: the server of the process that has it open, or its own."""
        from indexer.shared_lite import LiteOpenError, resolve

        if not self.uri.endswith(".db"):
            raise StoreError(
                f"a local Milvus Lite URI must end in .db (got {self.uri!r}); for a server use --uri http://host:19530"
            )
        try:
            return resolve(self.uri, self.settings.lite_wait_s, create=self.create)
        except LiteOpenError as e:
            if e.kind == "not-a-database":
                raise StoreError(
                    f"{self.uri} is not a Milvus Lite database ({e}). Check --uri / RETRIEVAL_MILVUS_URI: a new "
                    f"database needs a path that does not exist yet, e.g. --uri data/milvus.db."
                ) from None
            if e.kind == "missing":
                from indexer.catalog import quick_start_hint

                raise DatabaseMissing(
                    f"there is no Milvus Lite database at {self.uri}, and this command creates none (nothing was "
                    f"written). Check --uri / RETRIEVAL_MILVUS_URI, or {quick_start_hint(self)}"
                ) from None
            if e.kind == "read-only":
                raise DatabaseReadOnly(
                    f"{self.uri} is in a read-only location: {e}. Milvus Lite writes to its folder even to read "
                    f"(a LOCK file and its log): copy the database somewhere writable and pass --uri "
                    f"/writable/place/milvus.db, or run the command as a user who may write there."
                ) from None
            if e.kind == "locked":
                raise DatabaseLocked(
                    f"{self.uri} is open in another process that does not share it (not this tool, or an old "
                    f"version of it). Stop that process, or have one process own the database: "
                    f"`python -m indexer serve --data-dir {self.uri}` and pass --uri http://127.0.0.1:19530 "
                    f"to every command and to the app."
                ) from None
            raise StoreError(f"could not open Milvus Lite at {self.uri}: {e}") from None

    def ensure_writable(self) -> None:
        """Fail now, with the reason, if this database cannot take writes (before a build spends minutes extracting)."""
        probe = f"retrieval_write_probe_{os.getpid()}"
        self.drop(probe)  # left over by a killed run that had the same pid
        self._retry(lambda: self.client.create_collection(probe, dimension=2), "write check (create)")
        self._retry(lambda: self.client.drop_collection(probe), "write check (drop)")

    def _retry(self, fn: Callable, what: str):
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as e:
                if not _is_transient(e):
                    raise
                if attempt == self.retries:
                    raise self._unreachable(f"{what} failed {self.retries + 1} times: {brief(e)}") from None
                log.warning("%s: %s failed (%s); retrying in %.1f s", self.describe_target(), what, self._why(e), delay)
                time.sleep(delay)
                delay = min(delay * 2, 30)
                if self._client is not None:
                    self._reconnect()

    def _why(self, exc: BaseException) -> str:
        """A failed call's cause in a few words: for a shared Lite database whose serving process has gone, that."""
        if self.is_lite and self._client is not None:
            from indexer.shared_lite import live_record, served_here

            db = Path(os.path.abspath(self.uri))
            if served_here(db) is None and live_record(db) is None:
                return "the process that served the database to this one has exited; this one opens it now"
        return brief(exc)

    def _reconnect(self) -> None:
        """Drop the dead connection and connect again; for Lite, to whichever process serves the database now."""
        try:
            from pymilvus import MilvusClient

            # pymilvus caches one connection per URI: close the dead one, or the new client reuses it
            old, self._client = self._client, None
            if old is not None:
                try:
                    old.close()
                except Exception:
                    pass
            self._loaded.clear()
            self._client = self._connect() if self.is_lite else MilvusClient(self.uri, token=self.token, timeout=10)
        except Exception as e:  # still down: the next retry tries again
            log.debug("reconnect failed: %s", e)

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
            self._client = None

    # collections --------------------------------------------------------------------------------

    def list_collections(self) -> List[str]:
        return sorted(self._retry(lambda: self.client.list_collections(), "list collections"))

    def has_collection(self, name: str) -> bool:
        validate_name(name)
        return self._retry(lambda: self.client.has_collection(name), "has_collection")

    def meta(self, name: str) -> Optional[CollectionMeta]:
        validate_name(name)
        if not self.has_collection(name):
            return None
        desc = self._retry(lambda: self.client.describe_collection(name), "describe")
        text = (desc.get("properties") or {}).get(META_KEY)
        return CollectionMeta.from_json(text) if text else None

    def describe(self, name: str) -> Dict:
        """Everything ``status`` shows about a collection: what Milvus holds now (rows, index), then the metadata
        (whose ``rows`` is what the last build wrote: ``rows_built`` here, so that it never hides the live count)."""
        meta = self.meta(name)
        index = self._retry(lambda: self.client.describe_index(name, "vector"), "describe index") or {}
        return {
            **(asdict(meta) if meta else {"model": None}),
            "collection": name,
            "rows": self.count(name),
            "rows_built": meta.rows if meta else None,
            "index_type": index.get("index_type"),
            "index_params": {k: v for k, v in index.items() if k in (meta.index.params if meta else {})},
            "metric": index.get("metric_type"),
        }

    def ensure_collection(self, name: str, meta: CollectionMeta, recreate: bool = False) -> bool:
        """Create the collection for ``meta``, or check that the existing one matches. True if created."""
        validate_name(name)
        existing = self.meta(name) if self.has_collection(name) else None
        if self.has_collection(name):
            if recreate:
                log.info("dropping %s (--recreate)", name)
                self.drop(name)
            elif existing is None:
                raise MetadataMismatch(
                    f"collection {name} exists but was not created by this tool; use --recreate to replace it"
                )
            elif not (same := existing.identity.compare(meta.identity)).interchangeable:
                raise MetadataMismatch(
                    f"collection {name} was built differently: {same.words()}. Use --recreate to rebuild it."
                )
            else:
                return False
        self._create(name, meta)
        return True

    def _create(self, name: str, meta: CollectionMeta) -> None:
        from pymilvus import DataType

        client = self.client
        schema = client.create_schema(
            auto_id=False,
            enable_dynamic_field=False,
            description=f"{meta.model} features of {meta.dataset}/{meta.split}",
        )
        schema.add_field("id", DataType.INT64, is_primary=True, description="canonical position of the image")
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=meta.dim)
        schema.add_field("class_id", DataType.VARCHAR, max_length=MAX_CLASS_LEN)
        schema.add_field("relpath", DataType.VARCHAR, max_length=MAX_PATH_LEN)
        self._retry(
            lambda: client.create_collection(
                name,
                schema=schema,
                index_params=self._index_params(meta.index),
                consistency_level="Strong",
                properties={META_KEY: meta.to_json()},
            ),
            "create collection",
        )
        log.info("created collection %s (dim %d, %s, L2)", name, meta.dim, meta.index.label)

    def _index_params(self, spec: IndexSpec):
        index = self.client.prepare_index_params()
        # explicit type + L2: the quick-create default would be AUTOINDEX + COSINE
        index.add_index(field_name="vector", index_type=spec.index_type, metric_type="L2", params=dict(spec.params))
        return index

    def rebuild_index(self, name: str, spec: IndexSpec, timeout_s: float = 3600) -> float:
        """Replace the collection's vector index by ``spec`` over the rows it holds (the vectors stay as they are);
        seconds from the drop of the old index until the new one was built and loaded.

        Milvus builds an index only over a released collection's sealed segments: the collection is flushed,
        released, its index dropped, the new one created (pymilvus waits until every row is indexed) and loaded.
        A server that cannot build the type (DISKANN without queryNode.enableDisk) fails here, not in a search."""
        validate_name(name)
        self.flush(name)
        t = time.perf_counter()
        self._retry(lambda: self.client.release_collection(name), "release")
        self._loaded.discard(name)
        self._retry(lambda: self.client.drop_index(name, "vector"), "drop index")
        try:
            self.client.create_index(name, self._index_params(spec), timeout=timeout_s)
            self.ensure_loaded(name)
        except Exception as e:  # the server answered the release and drop: this is the index's failure
            # an index task that cannot finish holds up every later index build of the server (measured: a FLAT
            # build waited 720 s behind an unfinishable DISKANN one): cancel it, and leave the rows searchable
            fallback = self._fall_back_to_flat(name)
            raise StoreError(
                f"{self.describe_target()} could not build and load {spec.label} on {name} within {timeout_s:.0f} s "
                f"({brief(e)})"
                + ("; DISKANN needs a server with queryNode.enableDisk: true" if spec.index_type == "DISKANN" else "")
                + f". {fallback}"
            ) from None
        seconds = time.perf_counter() - t
        log.info("%s: %s built and loaded in %.1f s", name, spec.label, seconds)
        return seconds

    def _fall_back_to_flat(self, name: str) -> str:
        """After a failed index build: the unfinished index dropped and FLAT built instead; what was done, in words."""
        try:
            self.client.drop_index(name, "vector")
            self.client.create_index(name, self._index_params(IndexSpec()), timeout=600)
            self.ensure_loaded(name)
            return "The collection now has the FLAT index (exact); status says so until a build sets another"
        except Exception as e:
            return f"Falling back to FLAT failed too ({brief(e)}): rebuild it with --index FLAT"

    def index_memory_bytes(self, name: str) -> Optional[int]:
        """Bytes the loaded collection's segments take in the query nodes, as a Milvus server reports them
        (``utility.get_query_segment_info``); None where it does not (Milvus Lite, an older server)."""
        if self.is_lite:
            return None
        import warnings

        try:
            from pymilvus import connections, utility

            alias = f"retrieval-{id(self)}"
            with warnings.catch_warnings():  # the ORM API is deprecated, and MilvusClient has no segment sizes
                warnings.simplefilter("ignore")
                connections.connect(alias=alias, uri=self.uri, token=self.token or "")
                try:
                    segments = utility.get_query_segment_info(name, using=alias)
                finally:
                    connections.disconnect(alias)
            return int(sum(int(getattr(s, "mem_size", 0)) for s in segments)) or None
        except Exception as e:
            log.debug("no memory figure for %s: %s", name, e)
            return None

    def set_meta(self, name: str, meta: CollectionMeta) -> None:
        self._retry(
            lambda: self.client.alter_collection_properties(name, properties={META_KEY: meta.to_json()}),
            "update metadata",
        )

    def drop(self, name: str) -> bool:
        validate_name(name)
        if not self.has_collection(name):
            return False
        self._retry(lambda: self.client.drop_collection(name), "drop")
        self._loaded.discard(name)
        return True

    # rows ---------------------------------------------------------------------------------------

    def upsert(
        self,
        name: str,
        ids: np.ndarray,
        vectors: np.ndarray,
        class_ids: Sequence[str],
        relpaths: Sequence[str],
        progress: bool = True,
        max_batch_bytes: Optional[int] = None,
    ) -> int:
        """Insert or overwrite rows by id, in batches of at most ``max_batch_bytes``; returns rows sent."""
        from tqdm import tqdm

        validate_name(name)
        n = len(ids)
        if n == 0:
            return 0
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        max_batch_bytes = max_batch_bytes or self.max_batch_bytes
        text_bytes = sum(len(c) + len(p) for c, p in zip(class_ids, relpaths)) / n
        row_bytes = vectors.shape[1] * 4 + 8 + text_bytes + 64
        per_batch = max(1, int(max_batch_bytes // row_bytes))
        bar = tqdm(total=n, unit="row", desc=f"upsert {name}", disable=not progress, dynamic_ncols=True)
        for start in range(0, n, per_batch):
            stop = min(start + per_batch, n)
            rows = [
                {
                    "id": int(ids[i]),
                    "vector": vectors[i],
                    "class_id": class_ids[i][:MAX_CLASS_LEN],
                    "relpath": relpaths[i][:MAX_PATH_LEN],
                }
                for i in range(start, stop)
            ]
            self._retry(lambda rows=rows: self.client.upsert(name, rows), "upsert")
            log.debug("upserted rows %d-%d of %d into %s", start, stop, n, name)
            bar.update(stop - start)
        bar.close()
        return n

    def delete_ids_from(self, name: str, first_id: int) -> None:
        self._retry(lambda: self.client.delete(name, filter=f"id >= {int(first_id)}"), "delete")

    def flush(self, name: str) -> None:
        self._retry(lambda: self.client.flush(name), "flush")

    def ensure_loaded(self, name: str) -> None:
        """Collections must be loaded (into memory) before search or query, once per process."""
        if name not in self._loaded:
            self._retry(lambda: self.client.load_collection(name), "load")
            self._loaded.add(name)

    def count(self, name: str) -> int:
        validate_name(name)
        self.ensure_loaded(name)
        res = self._retry(lambda: self.client.query(name, filter="", output_fields=["count(*)"]), "count")
        return int(res[0]["count(*)"])

    def iter_rows(self, name: str, batch_size: int = 4096, with_vectors: bool = True) -> Iterator[List[Dict]]:
        """All rows, in batches, through Milvus' query iterator."""
        fields = ["id", "class_id", "relpath"] + (["vector"] if with_vectors else [])
        self.ensure_loaded(name)
        it = self._retry(
            lambda: self.client.query_iterator(name, batch_size=batch_size, filter="id >= 0", output_fields=fields),
            "query iterator",
        )
        try:
            while True:
                batch = it.next()
                if not batch:
                    break
                yield batch
        finally:
            it.close()

    def read_all(self, name: str, progress: bool = False) -> Tuple[np.ndarray, np.ndarray, List[str], List[str]]:
        """(ids, vectors, class_ids, relpaths) of the whole collection, sorted by id."""
        from tqdm import tqdm

        total = self.count(name)
        ids, vecs, classes, paths = [], [], [], []
        with tqdm(total=total, unit="row", desc=f"read {name}", disable=not progress) as bar:
            for batch in self.iter_rows(name):
                for row in batch:
                    ids.append(row["id"])
                    vecs.append(np.asarray(row["vector"], dtype=np.float32))
                    classes.append(row["class_id"])
                    paths.append(row["relpath"])
                bar.update(len(batch))
        order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
        dim = len(vecs[0]) if vecs else 0
        vectors = np.stack(vecs)[order] if vecs else np.zeros((0, dim), np.float32)
        return (np.asarray(ids, dtype=np.int64)[order], vectors, [classes[i] for i in order], [paths[i] for i in order])

    def get_rows(
        self,
        name: str,
        ids: Sequence[int],
        fields: Sequence[str] = ("id", "class_id", "relpath"),
        consistency: Optional[str] = None,
    ) -> List[Dict]:
        ids = [int(i) for i in ids]
        if not ids:
            return []
        self.ensure_loaded(name)
        extra = {"consistency_level": consistency} if consistency else {}  # see search()
        return self._retry(lambda: self.client.get(name, ids=ids, output_fields=list(fields), **extra), "get")

    def ids_of_paths(self, name: str, relpaths: Sequence[str]) -> Dict[str, int]:
        """relpath -> id for those of ``relpaths`` the collection holds."""
        wanted = sorted(set(relpaths))
        if not wanted:
            return {}
        self.ensure_loaded(name)
        # a JSON string is a Milvus string literal, but Milvus reads no \u escapes: non-ASCII characters go as they are
        quoted = ", ".join(json.dumps(r, ensure_ascii=False) for r in wanted)
        rows = self._retry(
            lambda: self.client.query(name, filter=f"relpath in [{quoted}]", output_fields=["id", "relpath"]),
            "query by path",
        )
        return {r["relpath"]: int(r["id"]) for r in rows}

    # search -------------------------------------------------------------------------------------

    def search(
        self,
        name: str,
        queries: np.ndarray,
        k: int = 10,
        n_rows: Optional[int] = None,
        exclude_self_ids: Optional[npt.ArrayLike] = None,
        consistency: Optional[str] = None,
        within: Optional[Collection[int]] = None,
        params: Optional[Dict[str, int]] = None,
    ) -> List[List[Dict]]:
        """Top-k by squared L2 (as Milvus reports it), with id, class_id, relpath and distance.

        Milvus Lite's FLAT search materialises nq x N x dim floats, so queries are sent in groups
        sized to ``search_budget_bytes``. ``exclude_self_ids`` asks for one extra hit per query and
        drops the query's own id (leave-one-out). ``consistency`` overrides the collection's level
        ("Strong") for this search: on a Milvus server "Bounded" skips the wait for the next time
        tick (~200 ms by default), at the price of not seeing rows written in the last seconds.
        ``within``: only rows with these ids are searched (the images several collections have in common).
        ``params``: the index's search parameters (``IndexSpec.search_params``: ef, nprobe, search_list); none
        for FLAT.
        """
        validate_name(name)
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        self.ensure_loaded(name)
        if n_rows is None and self.is_lite:
            n_rows = self.count(name)
        if within is not None:
            n_rows = len(within) if n_rows is None else min(n_rows, len(within))
        if n_rows == 0:
            return [[] for _ in range(len(queries))]
        # a server needs no row count (counting is a Strong query: a time-tick wait); Lite's budget does
        limit = min(k + (1 if exclude_self_ids is not None else 0), n_rows or 16384, 16384)
        per_query = max(1, (n_rows or 1) * queries.shape[1] * 4 * 3)
        group = max(1, min(len(queries), self.search_budget_bytes // per_query, 1024))
        extra = {"consistency_level": consistency} if consistency else {}
        if within is not None:
            extra["filter"] = id_filter(within)
        excluded = None if exclude_self_ids is None else np.asarray(exclude_self_ids, dtype=np.int64)
        out: List[List[Dict]] = []
        for start in range(0, len(queries), group):
            chunk = queries[start : start + group]
            res = self._retry(
                lambda chunk=chunk: self.client.search(
                    name,
                    data=[q for q in chunk],
                    limit=limit,
                    output_fields=["class_id", "relpath"],
                    search_params={"metric_type": "L2", "params": at_least_limit(params or {}, limit)},
                    **extra,
                ),
                "search",
            )
            for qi, hits in enumerate(res):
                rows = [
                    {
                        "id": int(h["id"]),
                        "distance": float(h["distance"]),
                        "class_id": h["entity"].get("class_id"),
                        "relpath": h["entity"].get("relpath"),
                    }
                    for h in hits
                ]
                if excluded is not None:
                    own = int(excluded[start + qi])
                    rows = [r for r in rows if r["id"] != own]
                out.append(rows[:k])
        return out
