"""The descriptor section: every model under every descriptor on the same evaluated classes, whitening learned on
the others (and refused on the evaluated ones), query-side variants computed exactly, sentences and files."""

import json

import numpy as np
import pytest
from support.data import make_tiny_layout

from embed.common.descriptor import Descriptor, parse_descriptors
from embed.common.identity import EmbeddingKey
from embed.extraction.extract import ExtractConfig
from embed.extraction.shards import EmbeddingStore
from indexer.build import build
from indexer.evaluation.descriptors import (
    DescriptorEvalConfig,
    QueryExpansion,
    evaluate_descriptors,
    expand_queries,
    neighbours_of,
    write_report,
)
from indexer.evaluation.exact import ExactSearch
from indexer.milvus_store import VectorStore
from indexer.whitening import ClassSplit, WhiteningRefused

MODELS = ("timm:test_efficientnet", "timm:test_resnet")
CLASSES = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("descriptors")
    root = make_tiny_layout(tmp / "tiny", n_per_class=6, classes=CLASSES)
    store = VectorStore(str(tmp / "milvus.db"))
    for model in MODELS:
        cfg = ExtractConfig(
            model=model,
            split="val",
            data_root=root,
            out=tmp / "emb",
            random_init=True,
            workers=0,
            batch_size=8,
            device="cpu",
            precision="fp32",
            decode="workers",
            progress=False,
        )
        for d in ("default", "gem3"):
            build(cfg, store, progress=False, descriptor=Descriptor.parse(d))
    yield tmp, store
    store.close()


def _cfg(tmp, **kw):
    base = dict(
        models=MODELS,
        dataset="tiny",
        split="val",
        descriptors=parse_descriptors("default,gem3-l2,gem3-white8"),
        eval_classes=3,
        class_seed=0,
        embeddings=tmp / "emb",
        progress=False,
    )
    base.update(kw)
    return DescriptorEvalConfig(**base)


def test_every_model_under_every_descriptor_on_the_same_evaluated_classes(indexed):
    tmp, store = indexed
    section = evaluate_descriptors(_cfg(tmp), store)
    assert section.descriptors == ["default", "gem3-l2", "gem3-white8"] and section.models == list(MODELS)
    assert len(section.runs) == 6 and all(r.n_queries == 18 for r in section.runs)  # 3 classes x 6 images
    evaluated, learning = ClassSplit(3, 0).split(CLASSES)
    # an independent recomputation of one row: gem3 + unit length from the shards, float64 brute force
    model = MODELS[0]
    positions, raw, _ = EmbeddingStore(EmbeddingKey(model, "tiny", "val", "gem3").folder(tmp / "emb")).load()
    manifest = EmbeddingStore(EmbeddingKey(model, "tiny", "val", "gem3").folder(tmp / "emb")).read_manifest()
    classes = np.array([manifest.class_ids[p] for p in positions])
    keep = np.isin(classes, evaluated)
    x = raw[keep].astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    first = classes[keep][d.argmin(1)] == classes[keep]
    run = section.run(model, "gem3-l2")
    assert run.metrics["P@1"].mean == pytest.approx(first.mean())
    assert run.metrics["P@1"].low <= run.metrics["P@1"].mean <= run.metrics["P@1"].high
    white = section.run(model, "gem3-white8")
    assert "learned on 18 images (3 classes of tiny/val)" in white.whitening
    assert len(list((tmp / "emb").glob("*/tiny/whitening/gem3-8-*.npz"))) >= 1  # stored as its own artifact
    # paired differences per descriptor, and one sentence per descriptor and per model
    assert {(p.descriptor, p.metric) for p in section.differences} == {
        (label, m) for label in section.descriptors for m in ("P@1", "P@10", "MAP@R")
    }
    assert section.order_sentences[0].startswith("default (the reference, the first descriptor asked): order by MAP@R")
    assert all(("the same as" in s) for s in section.order_sentences[1:])
    assert [s.split(": best")[0] for s in section.best_sentences] == list(MODELS)
    md = write_report(section, tmp / "report")
    text = md.read_text()
    assert "| timm:test_resnet | gem3-white8 | 18 |" in text and (tmp / "report" / "descriptors.png").stat().st_size > 0
    assert json.loads((tmp / "report" / "descriptors.json").read_text())["descriptors"] == section.descriptors


def test_whitening_on_the_evaluated_images_is_refused(indexed):
    tmp, store = indexed
    with pytest.raises(WhiteningRefused, match="every class is evaluated"):
        evaluate_descriptors(_cfg(tmp, eval_classes=None), store)


def test_query_expansion_and_database_augmentation_are_computed_exactly_and_labelled(indexed):
    tmp, store = indexed
    qe = [QueryExpansion("aqe", 2, 3.0), QueryExpansion("dba", 2, 3.0)]
    section = evaluate_descriptors(_cfg(tmp, descriptors=parse_descriptors("default,gem3-l2"), expansions=qe), store)
    labels = section.descriptors
    assert labels == ["default", "gem3-l2", "gem3-l2 + αQE (k=2, α=3)", "gem3-l2 + DBA (k=2, α=3)"]  # raw: none
    # alpha-QE against a direct float64 computation for every query
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    neigh = ExactSearch(x.astype(np.float32)).leave_one_out(11)
    expanded = expand_queries(x, neigh, QueryExpansion("aqe", 2, 3.0))
    for i in range(12):
        j = np.argsort(-(x @ x[i]) + np.eye(12)[i] * 10)[:2]
        q = x[i] + sum(max(x[i] @ x[t], 0) ** 3 * x[t] for t in j)
        np.testing.assert_allclose(expanded[i], q / np.linalg.norm(q), rtol=1e-5)
    again = neighbours_of(expanded, x, 11)
    ref = np.argsort(((expanded[:, None].astype(np.float64) - x[None]) ** 2).sum(-1) + np.eye(12) * 1e9, axis=1)
    np.testing.assert_array_equal(again.index[:, :3], ref[:, :3])
