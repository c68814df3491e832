"""The column's latency says how much of it is embedding the query (issue 39, item 8): uploads and transformed
queries are embedded (seconds on a loaded CPU), indexed images use their stored vector."""

from __future__ import annotations

import pytest
from support.data import make_tiny_layout


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    from app.backend import AppSettings, Backend
    from embed.extraction.extract import ExtractConfig
    from indexer.build import build
    from indexer.milvus_store import VectorStore

    base = tmp_path_factory.mktemp("latency")
    root = make_tiny_layout(base / "data")
    uri = str(base / "milvus.db")
    cfg = ExtractConfig(
        model="timm:test_resnet", split="val", data_root=root, out=base / "emb", random_init=True, workers=0,
        batch_size=6, progress=False,
    )  # fmt: skip
    build(cfg, VectorStore(uri), progress=False)
    return Backend(AppSettings(uri=uri, data_root=str(root)))


def test_a_transformed_query_shows_its_embedding_time_and_an_indexed_one_none(backend):
    from app.backend import Query

    model = "timm:test_resnet"
    [indexed_image] = [im for im in backend.images(model).images.values() if im.id == 0]
    indexed = backend.query_for_image(indexed_image)
    transformed = Query(indexed.image.rotate(10), indexed.class_id, None, "rotated", original_id=0)
    [plain] = backend.search_all([model], indexed, 3)
    [changed] = backend.search_all([model], transformed, 3)
    assert plain.embed_ms == 0 and plain.latency_text.endswith("ms (stored vector)"), plain.latency_text
    assert 0 < changed.embed_ms <= changed.latency_ms
    assert f"(embedding the query: {changed.embed_ms:.0f} ms)" in changed.latency_text
    upload = Query(indexed.image.copy(), None, None, "upload.png")
    [uploaded] = backend.search_all([model], upload, 3)
    assert 0 < uploaded.embed_ms <= uploaded.latency_ms and "embedding the query" in uploaded.latency_text
