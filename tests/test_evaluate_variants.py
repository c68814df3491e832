"""The ``normalized`` evaluation variant really is computed on unit vectors.

Vectors whose class is their direction and whose norms vary over four decades: on unit vectors
every class is clean, on raw vectors the short ones crowd round the origin. The figures must
equal the metrics of explicitly normalised vectors and differ from the raw ones.
"""

import numpy as np
import pytest

from benchmarks.synthetic import synthetic_meta
from embed.common.identity import EmbeddingKey
from indexer.evaluation.evaluate import EvalConfig, evaluate
from indexer.evaluation.exact import ExactSearch
from indexer.evaluation.metrics import encode_labels, needed_k, retrieval_metrics
from indexer.milvus_store import VectorStore

KS = (1, 5)
KNN_K = 5


def _directional_vectors(n_per_class=12, n_classes=4, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:n_classes]  # orthonormal class directions
    labels = np.repeat(np.arange(n_classes), n_per_class)
    directions = centres[labels] + rng.normal(0, 0.15, (len(labels), dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    norms = np.exp(rng.uniform(np.log(0.01), np.log(100.0), len(labels)))
    return (directions * norms[:, None]).astype(np.float32), [f"c{l}" for l in labels]


@pytest.fixture
def varied_norm_collection(tmp_path):
    vectors, labels = _directional_vectors()
    store = VectorStore(str(tmp_path / "milvus.db"))
    name = EmbeddingKey("toy", "toyset", "val").collection_name
    meta = synthetic_meta("toy", vectors.shape[1], "toyset", str(tmp_path), rows=len(vectors), complete=True)
    store.ensure_collection(name, meta)
    store.upsert(
        name, np.arange(len(vectors)), vectors, labels, [f"{l}/{i}.jpg" for i, l in enumerate(labels)], progress=False
    )
    store.flush(name)
    return store, vectors, labels


def _figures(r):
    """The metrics of a report row or a Metrics object, as one flat dict."""
    get = r.get if isinstance(r, dict) else lambda k: getattr(r, k)
    out = {f"P@{k}": get("precision")[str(k)] for k in KS}
    out.update({f"R@{k}": get("recall")[str(k)] for k in KS})
    out.update({k: get(k) for k in ("r_precision", "map_at_r", "knn_top1")})
    return out


def _metrics_of(vectors, labels):
    """The metrics of exactly these vectors: what each variant's row must equal."""
    codes = encode_labels(labels)
    return retrieval_metrics(ExactSearch(vectors).leave_one_out(needed_k(codes, KS, KNN_K)), codes, KS, KNN_K)


def test_normalized_variant_equals_metrics_of_unit_vectors(varied_norm_collection):
    store, vectors, labels = varied_norm_collection
    cfg = EvalConfig(split="val", dataset="toyset", models=["toy"], ks=KS, knn_k=KNN_K, device="cpu", progress=False)
    rows = {r.features: r for r in evaluate(cfg, store).results}
    assert set(rows) == {"raw", "normalized"}

    unit = vectors.astype(np.float64) / np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    want_norm = _figures(_metrics_of(unit.astype(np.float32), labels))
    want_raw = _figures(_metrics_of(vectors, labels))
    got_norm, got_raw = _figures(rows["normalized"]), _figures(rows["raw"])
    assert got_norm == pytest.approx(want_norm, abs=1e-9), "normalized figures are not those of unit vectors"
    assert got_raw == pytest.approx(want_raw, abs=1e-9), "raw figures are not those of the stored vectors"
    # the data are built so that normalising matters; equal rows would mean one variant was skipped
    assert want_norm["P@5"] - want_raw["P@5"] > 0.1, (want_norm, want_raw)
    assert got_norm["P@5"] - got_raw["P@5"] > 0.1, "the normalized row repeats the raw figures"
