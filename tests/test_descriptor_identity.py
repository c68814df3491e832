"""Descriptors in what a vector set is: one forward pass stores several poolings, each with its own identity,
folder and collection; sets of two descriptors are never taken for one another; old records stay the default."""

import json

import numpy as np
import pytest
from support.builds import extract_config
from support.data import make_tiny_layout

from embed.common.descriptor import Descriptor, parse_descriptors
from embed.common.identity import EmbeddingKey, VectorSetIdentity
from embed.extraction.extract import extract, extract_poolings
from embed.extraction.shards import EmbeddingStore, Manifest, StoreMismatch

MODEL = "timm:test_efficientnet"  # tiny timm test net with a feature map: random weights are fine for mechanics


def _cfg(root, out, **kw):
    return extract_config(
        root, out, **{"model": MODEL, "shard_size": 4, "device": "cpu", "precision": "fp32", "decode": "workers", **kw}
    )


@pytest.fixture
def root(tmp_path):
    return make_tiny_layout(tmp_path / "tiny", n_per_class=5)


def test_one_forward_pass_stores_each_pooling_as_its_own_set_equal_to_a_run_of_it_alone(root, tmp_path):
    out = tmp_path / "emb"
    avg, gem = extract_poolings(_cfg(root, out, descriptors=parse_descriptors("avg,gem3")))
    assert avg.folder == out / "timm_test_efficientnet" / "tiny" / "val"  # the default keeps today's folder
    assert gem.folder == out / "timm_test_efficientnet" / "tiny" / "val__gem3"
    assert avg.manifest.identity.descriptor == "" and gem.manifest.identity.descriptor == "gem3"
    assert avg.n_computed == gem.n_computed == 10
    _, v_avg, _ = EmbeddingStore(avg.folder).load()
    _, v_gem, _ = EmbeddingStore(gem.folder).load()
    assert not np.allclose(v_avg, v_gem)
    alone = extract(_cfg(root, tmp_path / "alone", descriptors=[Descriptor.parse("gem3")]))
    _, v_alone, _ = EmbeddingStore(alone.folder).load()
    np.testing.assert_array_equal(v_gem, v_alone)
    default = extract(_cfg(root, tmp_path / "default"))  # no descriptor asked: today's vectors and folder
    _, v_default, _ = EmbeddingStore(default.folder).load()
    np.testing.assert_array_equal(v_avg, v_default)


def test_a_pooling_missing_images_gets_only_those_while_the_complete_one_is_untouched(root, tmp_path):
    out = tmp_path / "emb"
    extract(_cfg(root, out, limit=4))  # the default pooling, first shard only
    first = EmbeddingStore(EmbeddingKey(MODEL, "tiny", "val").folder(out)).shard_path(0).stat().st_mtime_ns
    avg, gem = extract_poolings(_cfg(root, out, limit=8, descriptors=parse_descriptors("avg,gem3")))
    assert avg.n_computed == 4 and gem.n_computed == 8 and avg.n_embedded == gem.n_embedded == 8
    assert EmbeddingStore(avg.folder).shard_path(0).stat().st_mtime_ns == first


def test_vector_sets_of_two_descriptors_are_refused_as_interchangeable(root, tmp_path):
    from indexer.milvus_store import CollectionMeta, MetadataMismatch, VectorStore

    out = tmp_path / "emb"
    avg, gem = extract_poolings(_cfg(root, out, descriptors=parse_descriptors("avg,gem3")))
    a, g = avg.manifest.identity, gem.manifest.identity
    same = g.compare(a)
    assert a != g and not same.interchangeable and same.differences == (("descriptor", "gem3", ""),)
    assert a.key.collection_name == "timm_test_efficientnet__tiny__val"
    assert g.key.collection_name == "timm_test_efficientnet__tiny__val__gem3"
    # a shard folder holding one descriptor refuses the other's manifest
    with pytest.raises(StoreMismatch, match="descriptor: stored '', now 'gem3'"):
        EmbeddingStore(avg.folder).prepare(gem.manifest, force=False)
    # and a collection built for one refuses the other's rows, even under the same name
    store = VectorStore(str(tmp_path / "milvus.db"))
    try:
        store.ensure_collection(a.key.collection_name, CollectionMeta.from_manifest(avg.manifest, normalized=False))
        with pytest.raises(MetadataMismatch, match="descriptor"):
            store.ensure_collection(a.key.collection_name, CollectionMeta.from_manifest(gem.manifest, normalized=False))
    finally:
        store.close()


def test_records_written_before_descriptors_load_as_the_models_own_pooling(root, tmp_path):
    result = extract(_cfg(root, tmp_path / "emb"))
    path = result.folder / "manifest.json"
    data = json.loads(path.read_text())
    for key in ("descriptor", "whitening"):
        del data["identity"][key]
    old = Manifest.from_dict(data)
    assert old.identity == result.manifest.identity and old.identity.descriptor == ""
    path.write_text(json.dumps(data))
    again = extract(_cfg(root, tmp_path / "emb"))  # the old folder is kept, nothing recomputed
    assert again.n_computed == 0 and again.n_embedded == 10
    assert VectorSetIdentity.from_dict(data["identity"]).key.collection_name == result.manifest.key.collection_name
    # a collection's metadata written before descriptors: today's descriptor, no whitening, the same name
    from indexer.milvus_store import CollectionMeta

    meta = json.loads(CollectionMeta.from_manifest(result.manifest, normalized=True).to_json())
    for key in ("descriptor", "whitening"):
        del meta["identity"][key]
    del meta["whitening_path"]
    old_meta = CollectionMeta.from_json(json.dumps(meta))
    assert old_meta.identity == result.manifest.identity.with_normalized(True)
    assert old_meta.key.collection_name == "timm_test_efficientnet__tiny__val" and old_meta.whitening_path == ""
