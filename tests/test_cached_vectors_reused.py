"""Growing --limit (or dropping it) embeds only the images not embedded yet, whatever the shard size."""

import numpy as np
import pytest
from support.builds import extract_config
from support.data import make_tiny_layout

from embed.extraction.extract import ExtractConfig, extract
from embed.extraction.shards import EmbeddingStore


def _cfg(root, out, **kw):
    return extract_config(root, out, **{"shard_size": ExtractConfig.shard_size, **kw})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_tiny_layout(tmp_path_factory.mktemp("reuse") / "tiny", n_per_class=7)  # 14 images


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """Every vector, from one uninterrupted run: what the grown runs must hold."""
    result = extract(_cfg(dataset, tmp_path_factory.mktemp("ref") / "emb"))
    positions, vectors, _ = EmbeddingStore(result.folder).load()
    return positions, vectors


# 5: the limits cut shards short; 1024: one shard for everything, as with the quick start's --limit 1000
@pytest.mark.parametrize("shard_size", [5, 1024])
def test_growing_the_limit_computes_only_the_new_images(dataset, reference, tmp_path, shard_size):
    out = tmp_path / "emb"
    steps = [(3, 3), (8, 5), (None, 6), (None, 0)]  # (--limit, images this run must embed)
    for limit, new in steps:
        result = extract(_cfg(dataset, out, limit=limit, shard_size=shard_size))
        assert result.n_computed == new, f"--limit {limit}: embedded {result.n_computed}, expected {new}"
        n = limit or 14
        assert result.n_embedded == n
        positions, vectors, _ = EmbeddingStore(result.folder).load(n)
        assert positions.tolist() == list(range(n))
        np.testing.assert_array_equal(vectors, reference[1][:n])


def test_a_smaller_limit_afterwards_recomputes_nothing(dataset, tmp_path):
    out = tmp_path / "emb"
    assert extract(_cfg(dataset, out, limit=9, shard_size=5)).n_computed == 9
    again = extract(_cfg(dataset, out, limit=4, shard_size=5))
    assert again.n_computed == 0 and again.n_embedded == 4


def test_skipped_files_of_the_kept_part_stay_listed(imagefolder, tmp_path):
    """In canonical order the imagefolder fixture has 4 good images, then bomb.png and empty.jpg (positions 4, 5),
    4 good ones, text.jpg and truncated.jpg, and 4 good ones."""
    out = tmp_path / "emb"
    first = extract(_cfg(imagefolder, out, limit=6, shard_size=1024))
    assert sorted(r for r, _ in first.skipped) == ["n01443537/bomb.png", "n01443537/empty.jpg"]
    assert first.n_computed == 4
    grown = extract(_cfg(imagefolder, out, shard_size=1024))
    assert grown.n_computed == 8 and grown.n_embedded == 12
    assert sorted(r for r, _ in grown.skipped) == [
        "n01443537/bomb.png",
        "n01443537/empty.jpg",
        "n01443537/text.jpg",
        "n01443537/truncated.jpg",
    ]


def test_an_interrupted_extension_keeps_the_shorter_shard(dataset, tmp_path, monkeypatch):
    out = tmp_path / "emb"
    extract(_cfg(dataset, out, limit=3, shard_size=1024))
    store = EmbeddingStore(extract(_cfg(dataset, out, limit=3, shard_size=1024)).folder)
    before = store.read_shard(0)

    import embed.extraction.embedder as embedder_module

    def crash(self, batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(embedder_module.Embedder, "embed_pooled", crash)  # what extraction calls per batch
    with pytest.raises(KeyboardInterrupt):
        extract(_cfg(dataset, out, limit=10, shard_size=1024))
    monkeypatch.undo()
    after = store.read_shard(0)
    np.testing.assert_array_equal(after["vectors"], before["vectors"])
    assert not list(store.folder.glob("*.tmp")), "no half-written shard is left behind"
    assert extract(_cfg(dataset, out, limit=10, shard_size=1024)).n_computed == 7
