"""Small comparison reports built by the product itself: two synthetic models in Milvus Lite, a DINO holdout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.synthetic import synthetic_meta
from embed.common.identity import EmbeddingKey
from indexer.evaluation.document import ReportDocument
from indexer.evaluation.evaluate import EvalConfig, evaluate_runs
from indexer.evaluation.report import ReportConfig, build_report
from indexer.milvus_store import VectorStore

MODELS = ("toya", "toyb")
DATASET = "toyset"


def clustered_vectors(noise: float, seed: int, n_classes: int = 6, per_class: int = 20, dim: int = 8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    return (centres[labels] + rng.normal(0, noise, (len(labels), dim))).astype(np.float32), labels


def synthetic_report(base: Path, resamples: int, seed: int, singletons: int = 0) -> dict:
    """report.{json,md,html} in ``base/rep`` for two models of unequal quality: the runs, the markdown, the document,
    the evaluation. ``singletons`` more images each have a class of their own: queries of kNN@20 but not of the
    ranking metrics (no other image of their class), so that the metrics' query counts differ."""
    store = VectorStore(str(base / "milvus.db"))
    for model, noise in zip(MODELS, (0.6, 1.2)):  # the same images, one model retrieving better
        vectors, labels = clustered_vectors(noise, seed=1)
        classes = [f"c{c}" for c in labels] + [f"s{i}" for i in range(singletons)]
        lone = np.random.default_rng(2).normal(size=(singletons, vectors.shape[1])).astype(np.float32)
        vectors = np.concatenate([vectors, lone])
        name = EmbeddingKey(model, DATASET, "val").collection_name
        store.ensure_collection(
            name, synthetic_meta(model, vectors.shape[1], DATASET, str(base), rows=len(vectors), complete=True)
        )
        store.upsert(
            name,
            np.arange(len(vectors)),
            vectors,
            classes,
            [f"{c}/{i}.jpg" for i, c in enumerate(classes)],
            progress=False,
        )
        store.flush(name)
    cfg = EvalConfig(
        split="val",
        dataset=DATASET,
        models=list(MODELS),
        ks=(1, 5, 10),
        features=("raw",),
        knn_k=20,
        device="cpu",
        progress=False,
        holdout=0.2,
    )
    evaluation, runs = evaluate_runs(cfg, store)
    out = base / "rep"
    build_report(evaluation, runs, ReportConfig(out=out, resamples=resamples, seed=seed, galleries=0))
    store.close()
    return {
        "runs": runs,
        "md": (out / "report.md").read_text(),
        "doc": ReportDocument.from_json((out / "report.json").read_text()),
        "evaluation": evaluation,
    }
