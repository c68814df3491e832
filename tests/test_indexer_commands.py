import json
import os
import subprocess
import sys

import numpy as np
import pytest
from support.builds import MODEL, extract_config
from support.cli import repo_env
from support.data import make_tiny_layout
from support.processes import lite_database_held_open
from support.waits import HANG_S

from embed.common.identity import EmbeddingKey
from indexer.build import build
from indexer.milvus_store import DatabaseLocked, MetadataMismatch, StoreError, VectorStore


def _cfg(root, out, **kw):
    return extract_config(root, out, **{"batch_size": 8, "shard_size": 8, **kw})


@pytest.fixture
def dataset(tmp_path):
    return make_tiny_layout(
        tmp_path / f"ds{os.getpid()}", n_per_class=10, classes=("n01440764", "n01443537", "n01484850")
    )


def _fresh(store: VectorStore, root, out):
    # the server is shared by the session: start each test from an empty collection
    from embed.sources.datasets import load_split

    store.drop(EmbeddingKey(MODEL, load_split(root, "val").dataset_name, "val").collection_name)


def test_build_twice_same_count_and_brute_force_search(store_uri, dataset, tmp_path):
    store = VectorStore(store_uri)
    _fresh(store, dataset, tmp_path / "emb")
    first = build(_cfg(dataset, tmp_path / "emb"), store, progress=False)
    assert first.rows == 30 and first.inserted == 30
    second = build(_cfg(dataset, tmp_path / "emb"), store, progress=False)
    assert second.rows == 30 and second.inserted == 0 and second.already_complete
    assert store.count(first.collection) == 30
    info = store.describe(first.collection)
    assert info["index_type"] == "FLAT" and info["metric"] == "L2"

    ids, vectors, classes, paths = store.read_all(first.collection)
    assert ids.tolist() == list(range(30)) and len(set(paths)) == 30
    rng = np.random.default_rng(0)
    queries = vectors[rng.choice(30, 5, replace=False)] + rng.normal(0, 0.01, (5, vectors.shape[1])).astype(np.float32)
    hits = store.search(first.collection, queries, k=7)
    for q, row in zip(queries, hits):
        d = ((vectors.astype(np.float64) - q) ** 2).sum(1)
        order = np.argsort(d, kind="stable")[:7]
        assert [h["id"] for h in row] == ids[order].tolist()
        np.testing.assert_allclose([h["distance"] for h in row], d[order], rtol=1e-4, atol=1e-4)


def test_interrupted_insert_then_rerun_is_exact(store_uri, dataset, tmp_path, monkeypatch):
    store = VectorStore(store_uri)
    _fresh(store, dataset, tmp_path / "emb")
    real_upsert = VectorStore.upsert
    calls = {"n": 0}

    def dying_upsert(self, name, ids, vectors, class_ids, relpaths, progress=True, max_batch_bytes=0):
        # send the first 12 rows, then die as a killed process would
        real_upsert(self, name, ids[:12], vectors[:12], class_ids[:12], relpaths[:12], progress=False)
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(VectorStore, "upsert", dying_upsert)
    with pytest.raises(KeyboardInterrupt):
        build(_cfg(dataset, tmp_path / "emb"), store, progress=False)
    monkeypatch.setattr(VectorStore, "upsert", real_upsert)
    name = EmbeddingKey(MODEL, dataset.name, "val").collection_name
    assert not store.meta(name).complete
    result = build(_cfg(dataset, tmp_path / "emb"), store, progress=False)
    assert result.rows == 30 and result.inserted == 30
    ids, *_ = store.read_all(name)
    assert sorted(ids.tolist()) == list(range(30)), "no duplicates, nothing missing"
    assert store.meta(name).complete


def test_metadata_mismatch_is_refused_unless_recreate(store_uri, dataset, tmp_path):
    store = VectorStore(store_uri)
    _fresh(store, dataset, tmp_path / "emb")
    build(_cfg(dataset, tmp_path / "emb"), store, progress=False)
    with pytest.raises(MetadataMismatch, match="normalized.*--recreate"):
        build(_cfg(dataset, tmp_path / "emb"), store, normalize=True, progress=False)
    result = build(_cfg(dataset, tmp_path / "emb"), store, normalize=True, recreate=True, progress=False)
    assert result.rows == 30 and store.meta(result.collection).normalized
    _, vectors, _, _ = store.read_all(result.collection)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # embeddings recomputed another way behind the collection's back: the collection is refused, not reused
    import torch

    from embed.extraction.embedder import resolve_precision
    from embed.extraction.extract import extract

    other = "bf16" if resolve_precision("auto", torch.device("cpu")) is None else "fp32"
    extract(_cfg(dataset, tmp_path / "emb", precision=other, force=True))
    with pytest.raises(MetadataMismatch, match="precision: stored"):
        build(_cfg(dataset, tmp_path / "emb", precision=other), store, normalize=True, progress=False)


def test_forced_re_extraction_rebuilds_the_collection_with_the_new_identity(store_uri, dataset, tmp_path):
    """build(decode=workers), then build(decode=device, force=True): the collection follows the new shards."""
    from embed.extraction.shards import EmbeddingStore

    store = VectorStore(store_uri)
    _fresh(store, dataset, tmp_path / "emb")
    first = build(_cfg(dataset, tmp_path / "emb", decode="workers"), store, progress=False)
    assert store.meta(first.collection).identity.decode == "workers"
    second = build(_cfg(dataset, tmp_path / "emb", decode="device", force=True), store, progress=False)
    assert not second.already_complete and second.inserted == 30
    meta = store.meta(second.collection)
    assert meta.identity.decode == "device" and meta.complete
    folder = EmbeddingKey(MODEL, dataset.name, "val").folder(tmp_path / "emb")
    manifest = EmbeddingStore(folder).read_manifest()
    assert manifest.identity.with_normalized(False) == meta.identity.with_normalized(False)
    positions, shard_vectors, _ = EmbeddingStore(folder).load()
    ids, vectors, _, _ = store.read_all(second.collection)
    np.testing.assert_array_equal(ids, positions)
    np.testing.assert_array_equal(vectors, shard_vectors)


def test_a_query_is_embedded_with_the_collections_precision_and_decode(store_uri, dataset, tmp_path):
    """The query embedder takes precision and decode from the collection, whatever the defaults are now."""
    import torch
    from PIL import Image

    from embed.extraction.embedder import resolve_precision
    from embed.extraction.shards import EmbeddingStore
    from indexer.query_embedding import QueryEmbedder

    other = "bf16" if resolve_precision("auto", torch.device("cpu")) is None else "fp32"
    store = VectorStore(store_uri)
    _fresh(store, dataset, tmp_path / "emb")
    result = build(_cfg(dataset, tmp_path / "emb", decode="device", precision=other), store, progress=False)
    meta = store.meta(result.collection)
    assert (meta.identity.precision, meta.identity.decode) == (other, "device")
    query = QueryEmbedder.for_collection(meta, device="cpu")
    assert query.embedder.precision_name == other
    folder = EmbeddingKey(MODEL, dataset.name, "val").folder(tmp_path / "emb")
    manifest = EmbeddingStore(folder).read_manifest()
    positions, shard_vectors, _ = EmbeddingStore(folder).load()
    image = Image.open(dataset / "val" / manifest.relpaths[int(positions[3])])
    vector = query.embed([image])[0]
    # the same image embedded as a query equals its row: same weights, precision and resampling
    np.testing.assert_allclose(vector, shard_vectors[3], rtol=0, atol=1e-4 * float(np.abs(shard_vectors[3]).max()))


def test_batches_are_bounded_by_bytes(store_uri, monkeypatch):
    from benchmarks.synthetic import synthetic_meta

    store = VectorStore(store_uri)
    meta = synthetic_meta("m", 64, "bytes_test", "/x")
    store.drop("bytes_test")
    store.ensure_collection("bytes_test", meta)
    sizes = []
    client = store.client
    real = client.upsert

    def spy(name, rows, **kw):
        sizes.append(len(rows))
        return real(name, rows, **kw)

    monkeypatch.setattr(client, "upsert", spy)
    vectors = np.random.default_rng(0).normal(size=(30, 64)).astype(np.float32)
    store.upsert(
        "bytes_test",
        np.arange(30),
        vectors,
        ["c"] * 30,
        [f"p{i}" for i in range(30)],
        progress=False,
        max_batch_bytes=3000,
    )
    store.flush("bytes_test")
    assert sum(sizes) == 30 and len(sizes) >= 3
    assert max(sizes) * 64 * 4 <= 3000, "each request carries at most max_batch_bytes of vectors"
    assert store.count("bytes_test") == 30
    store.drop("bytes_test")


def test_invalid_names_never_reach_milvus(store_uri):
    store = VectorStore(store_uri)
    for bad in ("x; drop", "a b", "../etc", "id >= 0 or 1", ""):
        with pytest.raises(StoreError):
            store.count(bad)
    assert (
        EmbeddingKey("timm:resnet18.a1_in1k", "my data-set", "val").collection_name
        == "timm_resnet18_a1_in1k__my_data_set__val"
    )


def test_lite_lock_conflict_names_the_remedy(tmp_path):
    uri = str(tmp_path / "locked.db")
    with lite_database_held_open(uri):
        with pytest.raises(DatabaseLocked, match="indexer serve.*--uri"):
            VectorStore(uri).list_collections()


def test_an_unreachable_server_fails_clearly_without_retrying():
    from support.data import free_port
    from support.logs import RecordedRetries

    store = VectorStore(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.1)
    with RecordedRetries() as retries, pytest.raises(StoreError, match="unreachable") as e:
        store.list_collections()
    # a refused local port cannot heal: said at once, with no retry
    assert retries.messages == [] and "connection refused" in str(e.value)


def test_cli_status_json_and_search(dataset, tmp_path):
    env = repo_env()
    uri = str(tmp_path / "cli.db")
    common = ["--uri", uri]
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "indexer", *a], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=HANG_S
    )
    b = run(
        "build",
        "--model",
        MODEL,
        "--split",
        "val",
        "--data-root",
        str(dataset),
        "--out",
        str(tmp_path / "emb"),
        "--random-init",
        "--workers",
        "0",
        "--no-progress",
        *common,
    )
    assert b.returncode == 0, b.stderr
    s = run("status", "--json", *common)
    status = json.loads(s.stdout)
    (row,) = status["collections"]
    assert row["rows"] == 30 and row["index_type"] == "FLAT" and row["metric"] == "L2"
    assert row["weights"] == "random" and row["dim"] > 0
    img = dataset / "val" / "images" / "val_3.JPEG"
    q = run("search", "--model", MODEL, "--split", "val", "--image", str(img), "-k", "3", "--json", *common)
    assert q.returncode == 0, q.stderr
    hits = json.loads(q.stdout)
    assert hits["distance"] == "squared L2" and hits["random_weights"]
    # an indexed image is left out of its own hits, as in the app and the evaluation; --include-self keeps it
    own = hits["indexed_id"]  # its position among the sorted paths
    assert isinstance(own, int) and len(hits["hits"]) == 3
    assert "images/val_3.JPEG" not in [h["relpath"] for h in hits["hits"]]
    q = run("search", "--model", MODEL, "--split", "val", "--image", str(img), "-k", "3", "--include-self", *common)
    assert q.returncode == 0, q.stderr
    lines = q.stdout.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if ": top 3 in " in line) :]
    assert f"it is indexed image id={own}: kept among its hits (--include-self)" in lines[1]
    assert f"id={own} " in lines[2] and "images/val_3.JPEG" in lines[2], "itself first: the file embeds to its vector"
    assert float(lines[2].split("d²=")[1].split()[0]) < 1e-3
    outside = tmp_path / "copy_of_val_3.JPEG"
    outside.write_bytes(img.read_bytes())
    q = run("search", "--model", MODEL, "--split", "val", "--image", str(outside), "-k", "3", "--json", *common)
    copy = json.loads(q.stdout)
    assert copy["indexed_id"] is None and copy["hits"][0]["relpath"] == "images/val_3.JPEG", "a copy is not the image"
    bad = run("search", "--model", "nope", "--split", "val", "--image", str(img), *common)
    assert bad.returncode == 2 and "choose from" in bad.stderr and "Traceback" not in bad.stderr
    missing = run("search", "--model", "vit", "--split", "val", "--image", str(img), *common)
    assert missing.returncode == 2 and "python -m indexer build --model vit" in missing.stderr
    d = run("drop", "--model", MODEL, "--split", "val", "--yes", *common)
    assert d.returncode == 0 and "dropped" in d.stdout


def test_evaluate_report_outputs_and_milvus_agreement(store_uri, dataset, tmp_path):
    from indexer.evaluation.evaluate import EvalConfig, evaluate, markdown_table, write_csv, write_json, write_plot

    store = VectorStore(store_uri)
    _fresh(store, dataset, tmp_path / "emb")
    build(_cfg(dataset, tmp_path / "emb"), store, progress=False)
    cfg = EvalConfig(
        split="val", dataset=dataset.name, models=[MODEL], ks=(1, 5, 10), milvus_check=20, time_naive=30, progress=False
    )
    report = evaluate(cfg, store)
    raw, norm = report.results
    assert (raw.features, norm.features) == ("raw", "normalized")
    assert raw.n == 30 and raw.random_weights and set(raw.precision) == {"1", "5", "10"}
    assert raw.milvus_check.agree == 20 and raw.milvus_check.disagree == 0
    naive = raw.naive
    assert naive.queries == 30 and naive.naive_precision_at_1 == pytest.approx(raw.precision["1"])
    assert "leave-one-out" in report.protocol.name and "query iterator" in report.protocol.computation
    table = markdown_table(report)
    assert "⚠random" in table and "RANDOM" in table and "Protocol:" in table
    write_json(report, tmp_path / "r.json")
    write_csv(report, tmp_path / "r.csv")
    write_plot(report, tmp_path / "r.png")
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["model"] == MODEL
    assert (tmp_path / "r.csv").read_text().count("\n") == 3 and (tmp_path / "r.png").stat().st_size > 5000


def _record_row_writes(monkeypatch, client_cls):
    """Spy on every row write the store sends: a list of (method, id), in order."""
    sent = []
    for method in ("insert", "upsert"):
        real = getattr(client_cls, method)

        def spy(self, collection_name, data, *args, _real=real, _method=method, **kwargs):
            sent.extend((_method, int(row["id"])) for row in data)
            return _real(self, collection_name, data, *args, **kwargs)

        monkeypatch.setattr(client_cls, method, spy)
    return sent


def _rows_without_dedup(sent):
    """Rows a backend that never deduplicates would hold: an insert adds a row, an upsert replaces the id's rows."""
    held = {}
    for method, row_id in sent:
        held[row_id] = held.get(row_id, 0) + 1 if method == "insert" else 1
    return held


def test_rerun_build_writes_each_id_once(store_uri, dataset, tmp_path, monkeypatch):
    """Rewriting rows that are already there must replace them, on any backend.

    Milvus Lite hides duplicate primary keys (count, query and search all show one row per id), so
    the rows the store sends are recorded too and must add up to one row per id without that help.
    """
    store = VectorStore(store_uri)
    _fresh(store, dataset, tmp_path / "emb")
    sent = _record_row_writes(monkeypatch, type(store.client))
    first = build(_cfg(dataset, tmp_path / "emb"), store, progress=False)
    # a crash after the rows were written but before the count was verified leaves the build incomplete;
    # the rerun then writes every row again over the existing ones
    meta = store.meta(first.collection)
    meta.complete = False
    store.set_meta(first.collection, meta)
    second = build(_cfg(dataset, tmp_path / "emb"), store, progress=False)
    assert second.inserted == 30 and not second.already_complete, "the rerun must rewrite the rows"

    assert len(sent) == 60 and {i for _, i in sent} == set(range(30))
    held = _rows_without_dedup(sent)
    duplicated = sorted(i for i, n in held.items() if n > 1)
    assert not duplicated, (
        f"ids written twice without replacing: {duplicated[:5]}... "
        f"a backend without deduplication would hold {sum(held.values())} rows for 30 ids"
    )
    assert store.count(first.collection) == 30
    ids, _, _, _ = store.read_all(first.collection)
    assert ids.tolist() == list(range(30)), "ids queried back: each once, none missing"
    got = store.get_rows(first.collection, list(range(30)))
    assert sorted(r["id"] for r in got) == list(range(30))
