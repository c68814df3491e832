"""DINO-style kNN: the weighted vote, the streamed running top-k, the holdout, and bounded memory."""

import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from support.cli import repo_env
from support.oracles import dino_by_hand

from indexer.evaluation.knn import (
    KnnConfig,
    array_chunks,
    dino_knn,
    stratified_holdout,
    synthetic_chunks,
    weighted_vote,
)


def test_weighted_vote_follows_the_formula():
    sim = np.array([[0.50, 0.45, 0.45]])
    labels = np.array([[0, 1, 1]])
    s = weighted_vote(sim, labels, 2, 0.07)
    assert s[0, 0] == pytest.approx(np.exp(0.5 / 0.07), rel=1e-5)
    assert s[0, 1] == pytest.approx(2 * np.exp(0.45 / 0.07), rel=1e-5)
    assert s[0].argmax() == 0  # one close neighbour outweighs two a little further at T = 0.07
    assert weighted_vote(sim, labels, 2, 1.0)[0].argmax() == 1  # and not at T = 1
    assert weighted_vote(np.array([[0.9, -np.inf]]), np.array([[1, -1]]), 2, 0.07)[0, 0] == 0, "padding votes nowhere"


@pytest.mark.parametrize("chunk", [7, 64, 10_000])
def test_streamed_chunks_equal_the_direct_computation(chunk):
    rng = np.random.default_rng(chunk)
    centres = rng.normal(size=(6, 16))
    db_labels = rng.integers(0, 6, 500)
    q_labels = rng.integers(0, 6, 60)
    database = (centres[db_labels] + rng.normal(0, 1.2, (500, 16))).astype(np.float32)
    queries = (centres[q_labels] + rng.normal(0, 1.2, (60, 16))).astype(np.float32)
    res = dino_knn(queries, q_labels, array_chunks(database, db_labels, chunk), 6, KnnConfig(chunk_rows=chunk))
    expected = dino_by_hand(queries, q_labels, database, db_labels)
    assert res.correct.tolist() == expected.tolist()
    assert res.top1 == pytest.approx(expected.mean()) and res.n_database == 500 and res.n_queries == 60
    assert 0.3 < res.top1 < 1.0 and res.top5 >= res.top1


@pytest.mark.parametrize("buffer_bytes", [4 * 64 * 7, 4 * 64 * 60, 1 << 30])
def test_query_blocks_give_the_same_neighbours(monkeypatch, buffer_bytes):
    """Queries in blocks of 7, 60 (a partial last block: 150 queries) or all at once: one result."""
    import indexer.evaluation.knn as knn

    rng = np.random.default_rng(5)
    db_labels, q_labels = rng.integers(0, 6, 400), rng.integers(0, 6, 150)
    database, queries = rng.normal(size=(400, 16)).astype(np.float32), rng.normal(size=(150, 16)).astype(np.float32)
    monkeypatch.setattr(knn, "SIMILARITY_BUFFER_BYTES", buffer_bytes)
    res = dino_knn(queries, q_labels, array_chunks(database, db_labels, 64), 6, KnnConfig(chunk_rows=64))
    assert res.correct.tolist() == dino_by_hand(queries, q_labels, database, db_labels).tolist()


def _traced_peak_mib(run) -> float:
    """Peak of the NumPy/Python memory ``run`` allocates (tracemalloc: what this process's code allocates, whatever
    else the machine runs; torch's own allocations are not traced, the similarity blocks are measured apart)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        run()
        return (tracemalloc.get_traced_memory()[1] - base) / 2**20
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_the_queries_beyond_their_top_k(monkeypatch):
    """All at once, 20,000 queries x 16,384 rows of float32 similarities would be 1,250 MiB; in blocks, no block is
    over the budget, and the rest grows only by the queries themselves and their running top k."""
    import indexer.evaluation.knn as knn

    budget = 64 * 2**20
    monkeypatch.setattr(knn, "SIMILARITY_BUFFER_BYTES", budget)
    dim, rows, k = 32, 16384, 20
    blocks, traced = {}, {}
    for n_queries in (2000, 20000):
        queries = np.random.default_rng(0).standard_normal((n_queries, dim), dtype=np.float32)
        result = {}
        traced[n_queries] = _traced_peak_mib(
            lambda: result.setdefault(
                "r",
                dino_knn(
                    queries,
                    np.zeros(n_queries, np.int64),
                    synthetic_chunks(rows, dim, rows, 10),
                    10,
                    KnnConfig(k=k, chunk_rows=rows),
                ),
            )
        )
        blocks[n_queries] = result["r"].largest_block_bytes
    assert max(blocks.values()) <= budget, {n: b / 2**20 for n, b in blocks.items()}
    assert blocks[20000] == blocks[2000], "the block size follows the budget, not the number of queries"
    # 18,000 more queries: their normalised copy and votes (18,000 x 32 and x 10 floats, about 3.5 MiB); a chunk is
    # 2 MiB either way
    per_query_mib = (dim + 10) * 8 / 2**20
    assert traced[20000] - traced[2000] < 18000 * per_query_mib + 2, traced


def test_peak_memory_does_not_grow_with_the_database():
    def streamed(rows: int, dim: int = 128):
        queries = np.random.default_rng(0).standard_normal((500, dim), dtype=np.float32)
        res = dino_knn(
            queries, np.zeros(500, np.int64), synthetic_chunks(rows, dim, 4096, 100), 100, KnnConfig(chunk_rows=4096)
        )
        assert res.n_database == rows
        return res

    small, large = {}, {}
    traced_small = _traced_peak_mib(lambda: small.setdefault("r", streamed(40_000)))  # database 20 MiB
    traced_large = _traced_peak_mib(lambda: large.setdefault("r", streamed(400_000)))  # database 195 MiB
    chunk_mib = 4096 * 128 * 4 / 2**20  # 2 MiB
    assert traced_large < traced_small + chunk_mib, (traced_small, traced_large)
    assert traced_large < 8 * chunk_mib, (
        f"streaming 195 MiB of database must not hold it: traced {traced_large:.1f} MiB"
    )
    assert large["r"].largest_block_bytes == small["r"].largest_block_bytes == 500 * 4096 * 4


def test_stratified_holdout_is_deterministic_disjoint_and_per_class():
    labels = np.repeat(np.arange(10), 50)
    labels = np.append(labels, 99)  # a singleton class stays in the database
    q, db = stratified_holdout(labels, 0.2, seed=3)
    q2, _ = stratified_holdout(labels, 0.2, seed=3)
    assert q.tolist() == q2.tolist() and not set(q) & set(db) and len(q) + len(db) == len(labels)
    assert np.bincount(labels[q], minlength=100)[:10].tolist() == [10] * 10
    assert len(labels) - 1 in db
    assert stratified_holdout(labels, 0.2, seed=4)[0].tolist() != q.tolist()
    with pytest.raises(ValueError, match="between 0 and 1"):
        stratified_holdout(labels, 1.5)


def test_dry_run_prints_projection(tmp_path):
    env = repo_env()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "indexer",
            "evaluate",
            "--simulate-rows",
            "1280000",
            "--dim",
            "64",
            "--queries",
            "200",
            "--chunk-rows",
            "8192",
            "--json",
            str(tmp_path / "dry.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "1,280,000 database rows" in out.stdout and "projected time for 157 chunks" in out.stdout
    assert "peak memory" in out.stdout and "not on the database size" in out.stdout
    dry = json.loads((tmp_path / "dry.json").read_text())
    assert dry["simulated_rows"] == 1280000 and dry["sampled_rows"] == 16384
    assert dry["projected_seconds"] == pytest.approx(dry["seconds_per_chunk"] * 157)


class RowsOnly:
    """The one VectorStore method milvus_chunks uses: rows in query-iterator batches."""

    def __init__(self, vectors, classes, batch):
        self.vectors, self.classes, self.batch = vectors, classes, batch

    def iter_rows(self, name, batch_size=4096):
        for start in range(0, len(self.vectors), self.batch):
            yield [
                {"id": i, "vector": self.vectors[i].tolist(), "class_id": self.classes[i]}
                for i in range(start, min(start + self.batch, len(self.vectors)))
            ]


def test_milvus_stream_gives_the_same_result_and_codes_unseen_classes():
    from indexer.evaluation.knn import milvus_chunks

    rng = np.random.default_rng(1)
    db = rng.normal(size=(300, 8)).astype(np.float32)
    db_classes = [f"c{i % 7}" for i in range(300)]  # c6 never appears among the queries
    queries = rng.normal(size=(40, 8)).astype(np.float32)
    q_classes = [f"c{i % 6}" for i in range(40)]
    codes = {}
    q_labels = np.array([codes.setdefault(c, len(codes)) for c in q_classes])
    chunks = list(milvus_chunks(RowsOnly(db, db_classes, 37), "x", codes, chunk_rows=100))
    assert [len(v) for v, _ in chunks] == [111, 111, 78] and codes["c6"] == 6
    streamed = dino_knn(queries, q_labels, iter(chunks), None, KnnConfig())
    db_labels = np.concatenate([lab for _, lab in chunks])
    assert streamed.correct.tolist() == dino_by_hand(queries, q_labels, db, db_labels).tolist()
