"""From the command line: extract two poolings in one pass, learn a whitening on classes left out of a seeded
draw, build the whitened descriptor's own collection, and embed a query exactly as its rows."""

import json

import numpy as np
import pytest
from PIL import Image
from support.data import make_tiny_layout

from embed.cli import main as embed_main
from embed.common.identity import EmbeddingKey
from embed.extraction.shards import EmbeddingStore
from indexer.cli import main as indexer_main
from indexer.milvus_store import VectorStore
from indexer.whitening import ClassSplit, Whitening

MODEL = "timm:test_efficientnet"
CLASSES = ("n01440764", "n01443537", "n01484850", "n01491361")


@pytest.fixture
def setup(tmp_path):
    root = make_tiny_layout(tmp_path / "tiny", n_per_class=5, classes=CLASSES)
    common = ["--split", "val", "--data-root", str(root), "--random-init", "--device", "cpu", "--workers", "0"]
    common += ["--precision", "fp32", "--decode", "workers", "--no-progress"]
    return root, tmp_path / "emb", str(tmp_path / "milvus.db"), common


def test_whiten_then_build_a_whitened_collection_and_embed_queries_the_same_way(setup, capsys):
    root, emb, uri, common = setup
    assert embed_main(["extract", "--model", MODEL, "--descriptors", "avg,gem3", "--out", str(emb), *common]) == 0
    capsys.readouterr()
    whiten = ["whiten", "--model", MODEL, "--split", "val", "--data-root", str(root), "--out", str(emb)]
    assert indexer_main([*whiten, "--pooling", "gem3", "--eval-classes", "2", "--class-seed", "0", "--dim", "4"]) == 0
    path = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["path"]
    whitening = Whitening.load(path)
    evaluated, learning = ClassSplit(2, 0).split(CLASSES)
    assert whitening.identity.classes == tuple(learning) and whitening.identity.n_images == 10
    assert whitening.identity.source.descriptor == "gem3" and whitening.identity.dim_out == 4

    build = ["build", "--model", MODEL, "--uri", uri, "--out", str(emb), *common]
    capsys.readouterr()
    assert indexer_main([*build, "--descriptor", "gem3-white4"]) != 0
    assert "gem3-white4 needs a learned whitening" in capsys.readouterr().err
    assert indexer_main([*build, "--descriptor", "gem3-white4", "--whitening", path]) == 0
    assert indexer_main([*build]) == 0  # the model's own pooling: today's collection, untouched by the other
    store = VectorStore(uri)
    try:
        names = {c: store.meta(c) for c in store.list_collections()}
        white_name = "timm_test_efficientnet__tiny__val__gem3_white4"
        assert set(names) == {"timm_test_efficientnet__tiny__val", white_name}
        meta = names[white_name]
        assert meta.identity.descriptor == "gem3-white4" and meta.identity.whitening == whitening.identity.fingerprint
        assert meta.dim == 4 and meta.normalized and meta.whitening_path == path
        ids, rows, classes, relpaths = store.read_all(white_name)
        positions, pooled, _ = EmbeddingStore(EmbeddingKey(MODEL, "tiny", "val", "gem3").folder(emb)).load()
        np.testing.assert_allclose(rows, whitening.apply(pooled[np.searchsorted(positions, ids)]), atol=1e-6)

        from indexer.query_embedding import QueryEmbedder

        query = QueryEmbedder.for_collection(meta, device="cpu")
        image = Image.open(root / "val" / relpaths[3]).convert("RGB")
        np.testing.assert_allclose(query.embed([image])[0], rows[3], atol=1e-5)
    finally:
        store.close()

    # the app: a column searches the collection of the descriptor asked for it, and says which
    from app.backend import AppSettings, Backend

    for descriptors, expected, name in (
        ({MODEL: "gem3-white4"}, "gem3-white4", white_name),
        ({}, "default", "timm_test_efficientnet__tiny__val"),  # a timm: model's own pooling, named once loaded
    ):
        backend = Backend(AppSettings(uri=uri, data_root=str(root), descriptors=descriptors))
        try:
            assert backend.collections[MODEL].name == name
            query = backend.query_for_row({"id": int(ids[3]), "class_id": classes[3], "relpath": relpaths[3]})
            (result,) = backend.search_all([MODEL], query, k=3)
            assert result.problem is None and result.descriptor == expected and result.collection == name
        finally:
            backend.store.close()
    assert AppSettings.from_argv(["--descriptors", f"{MODEL}=gem3-white4"]).descriptors == {MODEL: "gem3-white4"}
