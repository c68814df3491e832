"""DINO-style kNN classification (Caron et al. 2021), streamed over a database of any size.

Protocol: the database and the queries are disjoint (a train split as database and a val split as
queries, or a deterministic class-stratified holdout of one split). Features are unit-normalised; each
query takes the 20 most cosine-similar database rows, weights each by exp(similarity / 0.07) and
predicts the class with the largest summed weight. Top-1 is the fraction predicted correctly.

The database arrives in chunks (from Milvus' query iterator or slices of an array) and every query
keeps a running top-k; similarities are computed a block of queries at a time, so memory is bounded by
the chunk, the similarity block and ``queries x k``, never by the database size.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch

from embed.common.vectors import l2_normalize

log = logging.getLogger(__name__)

Chunk = Tuple[np.ndarray, np.ndarray]  # (vectors (m, d) float32, integer labels (m,))
SIMILARITY_BUFFER_BYTES = 512 * 2**20  # one block of query x chunk similarities


@dataclass
class KnnConfig:
    k: int = 20
    temperature: float = 0.07
    chunk_rows: int = 65536
    device: str = "cpu"


@dataclass
class KnnResult:
    top1: float
    top5: float
    n_queries: int
    n_database: int
    correct: np.ndarray  # (n_queries,) bool, top-1 per query
    seconds: float
    protocol: str
    largest_block_bytes: int = 0  # the biggest query x chunk similarity block held at once


class RunningTopK:
    """The k most similar database rows seen so far, per query."""

    def __init__(self, queries: np.ndarray, k: int, device: str = "cpu"):
        self.dev = torch.device(device)
        self.q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(self.dev)
        n = len(queries)
        self.k = k
        self.sim = torch.full((n, k), -math.inf, device=self.dev)
        self.label = torch.full((n, k), -1, dtype=torch.int64, device=self.dev)
        self.seen = 0
        self.largest_block_bytes = 0  # the biggest similarity block computed so far (torch memory, not traced)

    @torch.inference_mode()
    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(self.dev)
        lab = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.dev)
        kk = min(self.k, len(x))
        # queries go in blocks so that the similarity buffer stays under SIMILARITY_BUFFER_BYTES:
        # 50,000 ImageNet val queries against a 65,536-row chunk would otherwise need 12.5 GiB at once
        step = max(1, SIMILARITY_BUFFER_BYTES // (4 * max(1, len(x))))
        for a in range(0, len(self.q), step):
            b = min(a + step, len(self.q))
            block = self.q[a:b] @ x.T
            self.largest_block_bytes = max(self.largest_block_bytes, block.element_size() * block.nelement())
            top_sim, top_idx = torch.topk(block, kk, dim=1)
            del block
            both_sim = torch.cat([self.sim[a:b], top_sim], 1)
            both_lab = torch.cat([self.label[a:b], lab[top_idx]], 1)
            keep_sim, keep = torch.topk(both_sim, self.k, dim=1)
            self.sim[a:b], self.label[a:b] = keep_sim, torch.gather(both_lab, 1, keep)
        self.seen += len(vectors)


def weighted_vote(sim: np.ndarray, labels: np.ndarray, n_classes: int, temperature: float) -> np.ndarray:
    """Class scores (nq, n_classes): sum over the neighbours of exp(sim / T) (DINO's eval_knn.py)."""
    sim_t = torch.as_tensor(sim, dtype=torch.float32)
    labels_t = torch.as_tensor(labels, dtype=torch.int64)
    weights = (sim_t / temperature).exp()
    valid = labels_t >= 0
    scores = torch.zeros(sim_t.shape[0], n_classes)
    scores.scatter_add_(1, labels_t.clamp(min=0), weights * valid)
    return scores.numpy()


def dino_knn(
    queries: np.ndarray,
    query_labels: np.ndarray,
    database: Iterable[Chunk],
    n_classes: Optional[int] = None,
    cfg: KnnConfig = KnnConfig(),
    protocol: str = "",
    progress: bool = False,
    total_rows: Optional[int] = None,
) -> KnnResult:
    """Top-1/top-5 of the weighted kNN vote; ``database`` yields (vectors, labels) chunks, normalised here."""
    from tqdm import tqdm

    t = time.perf_counter()
    top = RunningTopK(l2_normalize(np.asarray(queries, np.float32)), cfg.k, cfg.device)
    with tqdm(total=total_rows, unit="row", desc="DINO kNN database", disable=not progress) as bar:
        for vectors, labels in database:
            top.add(l2_normalize(np.asarray(vectors, np.float32)), labels)
            bar.update(len(vectors))
    neighbour_labels = top.label.cpu().numpy()
    truth = np.asarray(query_labels, dtype=np.int64)
    if n_classes is None:  # codes assigned while streaming: known only now
        n_classes = int(max(neighbour_labels.max(initial=0), truth.max(initial=0))) + 1
    scores = weighted_vote(top.sim.cpu().numpy(), neighbour_labels, n_classes, cfg.temperature)
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    correct = ranked[:, 0] == truth
    top5 = (ranked == truth[:, None]).any(1)
    return KnnResult(
        float(correct.mean()) if len(correct) else float("nan"),
        float(top5.mean()) if len(top5) else float("nan"),
        len(truth),
        top.seen,
        correct,
        time.perf_counter() - t,
        protocol,
        top.largest_block_bytes,
    )


def array_chunks(vectors: np.ndarray, labels: np.ndarray, chunk_rows: int) -> Iterator[Chunk]:
    for start in range(0, len(vectors), chunk_rows):
        yield vectors[start : start + chunk_rows], labels[start : start + chunk_rows]


def milvus_chunks(store, name: str, class_codes: Dict[str, int], chunk_rows: int) -> Iterator[Chunk]:
    """A collection's rows in chunks of about ``chunk_rows``; classes unseen among the queries get new codes
    (they can only ever be wrong answers)."""
    vecs: List[np.ndarray] = []
    labs: List[int] = []
    for batch in store.iter_rows(name, batch_size=min(chunk_rows, 16384)):
        for row in batch:
            vecs.append(np.asarray(row["vector"], dtype=np.float32))
            labs.append(class_codes.setdefault(row["class_id"], len(class_codes)))
        if len(vecs) >= chunk_rows:
            yield np.stack(vecs), np.asarray(labs, np.int64)
            vecs, labs = [], []
    if vecs:
        yield np.stack(vecs), np.asarray(labs, np.int64)


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(query rows, database rows): ``fraction`` of every class (rounded, at least one where the class has
    two or more members) held out as queries. Deterministic for a seed."""
    if not 0 < fraction < 1:
        raise ValueError(f"--holdout must be between 0 and 1 (got {fraction})")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    queries = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) < 2:
            continue
        take = min(len(rows) - 1, max(1, int(round(fraction * len(rows)))))
        queries.append(rng.permutation(rows)[:take])
    q = np.sort(np.concatenate(queries)) if queries else np.zeros(0, np.int64)
    db = np.setdiff1d(np.arange(len(labels)), q)
    return q, db


# dry run at a simulated size -------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Start a new peak-memory window (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def current_rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def synthetic_chunks(rows: int, dim: int, chunk_rows: int, n_classes: int, seed: int = 0) -> Iterator[Chunk]:
    """Random database chunks, generated one at a time: no chunk outlives the next."""
    rng = np.random.default_rng(seed)
    for start in range(0, rows, chunk_rows):
        m = min(chunk_rows, rows - start)
        yield rng.standard_normal((m, dim), dtype=np.float32), rng.integers(0, n_classes, m)


@dataclass
class DryRun:
    simulated_rows: int
    dim: int
    queries: int
    chunk_rows: int
    sampled_rows: int
    seconds_per_chunk: float
    projected_seconds: float
    peak_rss_mib: float
    baseline_rss_mib: float
    peak_over_baseline_mib: float
    device: str

    def lines(self) -> List[str]:
        n_chunks = math.ceil(self.simulated_rows / self.chunk_rows)
        return [
            f"DINO kNN dry run: {self.queries:,} queries x {self.simulated_rows:,} database rows x {self.dim} dims "
            f"(synthetic vectors), chunks of {self.chunk_rows:,} rows on {self.device}",
            f"measured on {self.sampled_rows:,} rows: {self.seconds_per_chunk:.2f} s per chunk "
            f"(similarities, top-k merge; reading from Milvus not included)",
            f"projected time for {n_chunks} chunks: {self.projected_seconds:,.0f} s "
            f"({self.projected_seconds / 3600:.2f} h)",
            f"peak memory: {self.peak_rss_mib:,.0f} MiB resident ({self.peak_over_baseline_mib:,.0f} MiB above the "
            f"{self.baseline_rss_mib:,.0f} MiB before the run); it depends on the chunk and the similarity block, "
            f"not on the database size (the whole database would be {self.simulated_rows * self.dim * 4 / 2**20:,.0f} MiB)",
        ]


def dry_run(
    simulated_rows: int,
    dim: int,
    queries: int = 10000,
    chunk_rows: int = 65536,
    sample_chunks: int = 2,
    n_classes: int = 1000,
    device: str = "cpu",
    seed: int = 0,
) -> DryRun:
    """Time ``sample_chunks`` chunks of a simulated database and project the full run; peak memory is measured
    over the sample, which holds as much at once as the full run would."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((queries, dim), dtype=np.float32)
    sample_rows = min(simulated_rows, chunk_rows * sample_chunks)
    cfg = KnnConfig(chunk_rows=chunk_rows, device=device)
    # warm up BLAS/torch threads outside the timed window
    RunningTopK(q[:8], cfg.k, device).add(*next(synthetic_chunks(64, dim, 64, n_classes, seed)))
    reset_peak_rss()
    baseline = current_rss_bytes()
    t = time.perf_counter()
    gen_seconds = 0.0
    top = RunningTopK(l2_normalize(q), cfg.k, device)
    chunks = synthetic_chunks(sample_rows, dim, chunk_rows, n_classes, seed + 1)
    while True:
        g = time.perf_counter()
        try:
            vectors, labels = next(chunks)
        except StopIteration:
            break
        gen_seconds += time.perf_counter() - g
        top.add(l2_normalize(vectors), labels)
    weighted_vote(top.sim.cpu().numpy(), top.label.cpu().numpy(), n_classes, cfg.temperature)
    seconds = time.perf_counter() - t - gen_seconds
    per_chunk = seconds / math.ceil(sample_rows / chunk_rows)
    peak = peak_rss_bytes()
    return DryRun(
        simulated_rows,
        dim,
        queries,
        chunk_rows,
        sample_rows,
        per_chunk,
        per_chunk * math.ceil(simulated_rows / chunk_rows),
        peak / 2**20,
        baseline / 2**20,
        (peak - baseline) / 2**20,
        device,
    )
