"""On-disk embeddings: a manifest plus fixed-range shards, every file written atomically.

Layout of ``<out>/<model>/<dataset>/<split>/``::

    manifest.json          identity (model, weights, transform, data) + the image list
    shard-00000.npz        positions [0, S): vectors (n, dim) float32, positions (n,), skipped
    shard-00001.npz        positions [S, 2S) ...

A shard covers a fixed range of canonical positions, so shards written by different runs, ranks
or ``--limit`` values line up. The shard being filled is rewritten after every batch, cut short at the
last position done (tmp + rename, so a file on disk is always whole): an interrupted run loses at most
the batch in flight, and the next run computes exactly the missing positions (a shard cut short, by an
interruption or a smaller ``--limit``, is extended, not recomputed).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from embed.common.identity import EmbeddingKey, VectorSetIdentity, record_from_dict, regroup_flat_identity

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class StoreMismatch(RuntimeError):
    """Existing embeddings were made with other weights, transform or data; needs --force."""


@dataclass
class Manifest:
    identity: VectorSetIdentity  # how the vectors were made (always raw: normalized=False)
    data_root: str
    layout: str
    shard_size: int
    relpaths: List[str]
    class_ids: List[str]
    weights_detail: str = ""  # the weights file's path or hub id, for finding them again
    format_version: int = FORMAT_VERSION

    @property
    def n_total(self) -> int:
        return len(self.relpaths)

    @property
    def key(self) -> EmbeddingKey:
        return self.identity.key

    @property
    def dim(self) -> int:
        return self.identity.dim

    def compatible_with(self, other: "Manifest") -> str:
        """Empty when shards written under ``other`` can be kept under this manifest, else why not."""
        same = self.identity.compare(other.identity)
        problems = [] if same.interchangeable else [same.words()]
        for name in ("shard_size", "format_version"):
            if getattr(self, name) != getattr(other, name):
                problems.append(f"{name}: stored {getattr(self, name)!r}, now {getattr(other, name)!r}")
        return "; ".join(problems)

    def to_dict(self) -> Dict:
        return {**asdict(self), "identity": self.identity.to_dict()}

    @classmethod
    def from_dict(cls, data: Dict) -> "Manifest":
        if "identity" not in data:  # written before the identity was one field; the decode mode was appended
            transform = str(data.get("transform", "")).split("\ndecode=")[0]
            data = regroup_flat_identity(data, data_fingerprint=data["list_fingerprint"], transform=transform)
        return record_from_dict(cls, data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``.

    The file gets the mode a plain ``open()`` would give it (0666 less the umask, usually 0644), not mkstemp's
    0600: a shared embeddings cache must be readable by the other users the umask lets read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class EmbeddingStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    # manifest ---------------------------------------------------------------------------------

    def read_manifest(self) -> Optional[Manifest]:
        path = self.folder / MANIFEST
        if not path.is_file():
            return None
        try:
            return Manifest.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError):
            return None  # unreadable: treated as absent, the run rewrites it

    def write_manifest(self, manifest: Manifest) -> None:
        atomic_write_bytes(self.folder / MANIFEST, json.dumps(manifest.to_dict(), indent=1).encode())

    def prepare(self, manifest: Manifest, force: bool) -> None:
        """Make the folder hold ``manifest``; refuse to mix with embeddings of another identity."""
        existing = self.read_manifest()
        differs = existing is not None and existing.compatible_with(manifest) != ""
        if differs and not force:
            assert existing is not None  # differs implies it
            raise StoreMismatch(
                f"{self.folder} holds embeddings made differently ({existing.compatible_with(manifest)}); "
                f"rerun with --force to recompute them"
            )
        if force or differs:
            self.clear_shards()
        self.write_manifest(manifest)

    def clear_shards(self) -> None:
        if self.folder.is_dir():
            for p in self.folder.glob("shard-*.npz"):
                p.unlink()

    # shards -----------------------------------------------------------------------------------

    def shard_path(self, index: int) -> Path:
        return self.folder / f"shard-{index:05d}.npz"

    @staticmethod
    def shard_ranges(n: int, shard_size: int) -> List[Tuple[int, int, int]]:
        """(shard index, start, stop) covering positions [0, n)."""
        return [(i, start, min(start + shard_size, n)) for i, start in enumerate(range(0, n, shard_size))]

    def write_shard(
        self,
        index: int,
        start: int,
        stop: int,
        positions: np.ndarray,
        vectors: np.ndarray,
        skipped: List[Tuple[int, str]],
    ) -> None:
        import io

        buf = io.BytesIO()
        np.savez(
            buf,
            start=np.int64(start),
            stop=np.int64(stop),
            positions=positions.astype(np.int64),
            vectors=vectors.astype(np.float32, copy=False),
            skipped_positions=np.array([p for p, _ in skipped], dtype=np.int64),
            skipped_reasons=np.array([r for _, r in skipped], dtype=np.str_),
        )
        atomic_write_bytes(self.shard_path(index), buf.getvalue())

    def missing_shards(self, n: int, shard_size: int, rank: int = 0, world: int = 1) -> List["ShardTask"]:
        """The shards of positions [0, n) still to write, this rank's share (every world-th shard).

        A shard written by a run with a smaller ``--limit`` ends early (positions [start, 1000) of
        [0, 1024)): it is extended with the missing positions only, its vectors kept.
        """
        tasks = []
        for i, a, b in self.shard_ranges(n, shard_size):
            if i % world != rank:
                continue
            done = self.stored_stop(i, a)
            if done is None or done < b:
                tasks.append(ShardTask(i, a, b, a if done is None else done))
        return tasks

    def stored_stop(self, index: int, start: int) -> Optional[int]:
        """Where the complete shard ``index`` on disk ends (it covers [start, stop)), or None when there is none."""
        path = self.shard_path(index)
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                return int(z["stop"]) if int(z["start"]) == start else None
        except Exception:
            return None  # a damaged shard is recomputed

    def shard_covers(self, index: int, start: int, stop: int) -> bool:
        """Whether a complete shard for at least [start, stop) is on disk."""
        done = self.stored_stop(index, start)
        return done is not None and done >= stop

    def read_shard(self, index: int) -> Dict[str, np.ndarray]:
        with np.load(self.shard_path(index)) as z:
            return {k: z[k] for k in ("positions", "vectors", "skipped_positions", "skipped_reasons")}

    def iter_shards(
        self, limit: Optional[int] = None, in_memory: Optional[Dict[int, Dict[str, np.ndarray]]] = None
    ) -> Iterator[Dict[str, np.ndarray]]:
        """Each shard's arrays up to ``limit``; shards in ``in_memory`` (just written) are not read again."""
        manifest = self.read_manifest()
        if manifest is None:
            return
        in_memory = in_memory or {}
        n = manifest.n_total if limit is None else min(limit, manifest.n_total)
        for index, _start, stop in self.shard_ranges(n, manifest.shard_size):
            shard = in_memory.get(index)
            if shard is None:
                path = self.shard_path(index)
                if not path.is_file():
                    raise FileNotFoundError(f"{path} is missing: run `python -m embed extract` first")
                shard = self.read_shard(index)
            keep = shard["positions"] < stop
            skip = shard["skipped_positions"] < stop
            yield {
                "positions": shard["positions"][keep],
                "vectors": shard["vectors"][keep],
                "skipped_positions": shard["skipped_positions"][skip],
                "skipped_reasons": shard["skipped_reasons"][skip],
            }

    def load(
        self, limit: Optional[int] = None, in_memory: Optional[Dict[int, Dict[str, np.ndarray]]] = None
    ) -> Tuple[np.ndarray, np.ndarray, List[Tuple[int, str]]]:
        """All embedded (positions, vectors) in canonical order, and the skipped (position, reason)."""
        manifest = self.read_manifest()
        if manifest is None:
            raise FileNotFoundError(f"no embeddings in {self.folder}")
        positions, vectors, skipped = [], [], []
        for shard in self.iter_shards(limit, in_memory):
            positions.append(shard["positions"])
            vectors.append(shard["vectors"])
            skipped += list(zip(shard["skipped_positions"].tolist(), shard["skipped_reasons"].tolist()))
        if not positions:
            return np.zeros(0, np.int64), np.zeros((0, manifest.dim), np.float32), skipped
        return np.concatenate(positions), np.concatenate(vectors), skipped


@dataclass(frozen=True)
class ShardTask:
    """Shard ``index`` to write for positions [start, stop); [start, done) are already in a shorter shard on disk."""

    index: int
    start: int
    stop: int
    done: int

    @property
    def todo(self) -> range:
        """The positions to compute."""
        return range(self.done, self.stop)


class ShardWriter:
    """Collects (positions, vectors, skipped) batches in canonical order and writes each shard when whole, and
    the shard being filled after every batch, cut short at the last position done (what a rerun resumes from).

    A batch may straddle shards, and a shard is whole once every position of its task is either a
    vector or a skipped file; a shard that extends a shorter one on disk is written with the old
    one's rows first, in one atomic replacement.
    """

    def __init__(self, store: EmbeddingStore, shards: List[ShardTask], dim: int, keep: bool = False):
        self.store = store
        self.keep = keep
        self.dim = dim
        self._shards = iter(shards)
        self._current = next(self._shards, None)
        self._positions: List[np.ndarray] = []
        self._vectors: List[np.ndarray] = []
        self._skipped: List[Tuple[int, str]] = []
        self.written: Dict[int, Dict[str, np.ndarray]] = {}  # with keep: each written shard's arrays
        self.skipped: List[Tuple[int, str]] = []  # every skipped (position, reason) seen
        # the current task's rows from the shorter shard on disk ([start, done)), read once
        self._old: Optional[Tuple[int, np.ndarray, np.ndarray, List[Tuple[int, str]]]] = None

    def add(self, positions: np.ndarray, vectors: np.ndarray, skipped: List[Tuple[int, str]]) -> None:
        self._skipped += skipped
        self.skipped += skipped
        while self._current is not None:
            task = self._current
            inside = positions < task.stop
            self._positions.append(positions[inside])
            self._vectors.append(vectors[inside])
            positions, vectors = positions[~inside], vectors[~inside]
            seen = sum(len(p) for p in self._positions) + sum(1 for p, _ in self._skipped if p < task.stop)
            if seen < len(task.todo):
                if seen:  # batches come in canonical order: [done, done + seen) is finished
                    self._write(task, stop=task.done + seen)
                return
            self._write(task)
            self._current = next(self._shards, None)

    def _old_rows(self, task: ShardTask) -> Tuple[np.ndarray, np.ndarray, List[Tuple[int, str]]]:
        """What the shorter shard on disk holds of ``task``'s range ([start, done)), read once per task."""
        if self._old is None or self._old[0] != task.index:
            old = self.store.read_shard(task.index)
            keep, keep_skipped = old["positions"] < task.done, old["skipped_positions"] < task.done
            skipped = sorted(
                zip(old["skipped_positions"][keep_skipped].tolist(), old["skipped_reasons"][keep_skipped].tolist())
            )
            self._old = (task.index, old["positions"][keep], old["vectors"][keep], skipped)
        return self._old[1], self._old[2], self._old[3]

    def _write(self, task: ShardTask, stop: Optional[int] = None) -> None:
        """Write ``task``'s shard: whole, or (``stop``) cut short at the last position done so far."""
        partial = stop is not None
        index, start, stop = task.index, task.start, task.stop if stop is None else stop
        parts_p, parts_v = list(self._positions), list(self._vectors)
        skipped = sorted(b for b in self._skipped if task.done <= b[0] < stop)
        if task.done > start:  # keep what the shorter shard holds
            old_positions, old_vectors, old_skipped = self._old_rows(task)
            parts_p.insert(0, old_positions)
            parts_v.insert(0, old_vectors)
            skipped = old_skipped + skipped
        positions = np.concatenate(parts_p) if parts_p else np.zeros(0, np.int64)
        vectors = np.concatenate(parts_v) if parts_v else np.zeros((0, self.dim), np.float32)
        self.store.write_shard(index, start, stop, positions, vectors, skipped)
        if partial:
            log.debug("shard %d holds positions %d-%d so far", index, start, stop)
            return
        log.debug("wrote shard %d (positions %d-%d, %d of them new)", index, start, stop, len(task.todo))
        if self.keep:
            self.written[index] = {
                "positions": positions.astype(np.int64),
                "vectors": vectors.astype(np.float32, copy=False),
                "skipped_positions": np.array([p for p, _ in skipped], dtype=np.int64),
                "skipped_reasons": np.array([r for _, r in skipped], dtype=np.str_),
            }
        self._skipped = [b for b in self._skipped if b[0] >= stop]
        self._positions, self._vectors = [], []
        self._old = None
