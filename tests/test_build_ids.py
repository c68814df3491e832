"""Milvus ids are the images' canonical positions, also after unreadable images in the middle of the split.

Once an image is skipped, ids numbered 0..n-1 would point every later row at the wrong file; the app's
side-by-side view, the report's galleries and the paired comparisons all join models by id. So: every stored
row's path and class are the split's at that id, the skipped positions hold no row, and searching with an
image embedded again (the query path, not the stored vector) finds that very image under its own id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.builds import MODEL, extract_config

from embed.common.identity import EmbeddingKey
from embed.extraction.extract import ExtractConfig
from embed.extraction.shards import EmbeddingStore
from embed.sources.datasets import load_split
from indexer.build import build
from indexer.milvus_store import VectorStore

UNREADABLE = {1: b"", 5: b"this is not an image\n" * 8}  # position -> bytes; 6 is truncated below


@pytest.fixture
def split_with_holes(tmp_path, tiny_layout):
    root = tiny_layout(tmp_path / "holes", n_per_class=4, classes=("n01440764", "n01443537", "n01484850"))
    records = load_split(root, "val").records
    for pos, data in UNREADABLE.items():
        (root / "val" / records[pos].relpath).write_bytes(data)
    whole = (root / "val" / records[6].relpath).read_bytes()
    (root / "val" / records[6].relpath).write_bytes(whole[: len(whole) // 3])
    return root


def _cfg(root: Path, out: Path) -> ExtractConfig:
    return extract_config(root, out, shard_size=4)


def test_ids_are_canonical_positions_after_skipped_images(split_with_holes, tmp_path):
    root = split_with_holes
    split = load_split(root, "val")
    store = VectorStore(str(tmp_path / "milvus.db"))
    try:
        result = build(_cfg(root, tmp_path / "emb"), store, progress=False)
        readable = [p for p in range(len(split)) if p not in (1, 5, 6)]
        assert result.skipped_images == 3 and result.rows == len(readable)

        ids, vectors, classes, relpaths = store.read_all(result.collection)
        shards = EmbeddingStore(EmbeddingKey(MODEL, root.name, "val").folder(tmp_path / "emb"))
        manifest = shards.read_manifest()
        assert ids.tolist() == readable, "ids are the readable images' positions in the split, holes left empty"
        for i, path, cls in zip(ids.tolist(), relpaths, classes):
            assert manifest.relpaths[i] == split.records[i].relpath, "the manifest lists the split in order"
            assert path == split.records[i].relpath, (
                f"row {i} stores {path}, but position {i} is {split.records[i].relpath}"
            )
            assert cls == split.records[i].class_id

        # the stored vector of each row is the one extraction computed for the image at that position
        positions, shard_vectors, _ = shards.load(len(split))
        assert positions.tolist() == readable
        np.testing.assert_array_equal(vectors, shard_vectors)

        # each image embedded again, as a query, finds itself under its own id
        from indexer.catalog import find_collection
        from indexer.image_search import search_images
        from indexer.query_embedding import QueryEmbedder

        coll = find_collection(store, MODEL, "val", root.name)
        embedder = QueryEmbedder.for_collection(coll.meta, device="cpu")
        files = [root / "val" / split.records[p].relpath for p in readable]
        answers = search_images(store, coll, lambda: embedder, files, k=1, include_self=True)
        for pos, answer in zip(readable, answers):
            assert answer.error is None, answer.error
            assert answer.indexed_id == pos, "the file is known as the indexed image at its position"
            (hit,) = answer.hits
            assert (hit["id"], hit["relpath"]) == (pos, split.records[pos].relpath), (
                f"{split.records[pos].relpath} found {hit['relpath']} under id {hit['id']}"
            )
            assert hit["distance"] < 1e-3 * float((shard_vectors**2).sum(1).mean())
    finally:
        store.close()
