"""PCA-whitening against a float64 eigendecomposition reference; learning it on evaluated images is refused."""

from dataclasses import replace

import numpy as np
import pytest

from embed.common.identity import VectorSetIdentity
from indexer.whitening import ClassSplit, Whitening, WhiteningRefused, check_disjoint, learn_whitening

SOURCE = VectorSetIdentity(
    model="effnet-lite0",
    timm_name="tf_efficientnet_lite0",
    dim=16,
    weights_source="package",
    weights_fingerprint="sha256:ab",
    dataset="tiny-imagenet-200",
    data_fingerprint="sha256:list",
    split="val",
    transform="T",
    decode="workers",
    precision="fp32",
    descriptor="gem3",
)


def _vectors(n=400, d=16, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) * np.linspace(3, 0.2, d)  # correlated, unequal variances
    return (np.abs(rng.normal(size=(n, d))) @ mixing + 5).astype(np.float32)


def test_whitening_matches_a_float64_eigendecomposition_and_whitens_the_learning_rows():
    x = _vectors()
    w = learn_whitening(x, SOURCE, classes=("a",), dim=10)
    # reference: plain NumPy in float64, written independently of the module
    u = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    mu = u.mean(0)
    cov = np.cov(u, rowvar=False)
    lam, vec = np.linalg.eigh(cov)
    lam, vec = lam[::-1][:10], vec[:, ::-1][:, :10]
    np.testing.assert_allclose(w.eigenvalues, lam, rtol=1e-10)
    ref_proj = vec / np.sqrt(lam)
    # eigenvectors are defined up to sign: compare column by column with the sign aligned
    signs = np.sign((w.projection * ref_proj).sum(0))
    np.testing.assert_allclose(w.projection, ref_proj * signs, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(w.mean, mu, rtol=1e-12)
    z = (u - w.mean) @ w.projection  # before the final unit length: identity covariance
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(10), atol=1e-8)
    out = w.apply(x)
    expected = ((u - mu) @ (ref_proj * signs)) / np.linalg.norm((u - mu) @ (ref_proj * signs), axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert out.dtype == np.float32 and out.shape == (400, 10)
    assert w.identity.dim_in == 16 and w.identity.dim_out == 10 and w.identity.n_images == 400


def test_whitening_is_reproducible_and_its_artifact_round_trips_with_its_fingerprint(tmp_path):
    x = _vectors()
    a, b = learn_whitening(x, SOURCE, ("a", "b")), learn_whitening(x.copy(), SOURCE, ("b", "a"))
    assert a.identity == b.identity and a.identity.fingerprint.startswith("sha256:")
    path = a.save(tmp_path)
    back = Whitening.load(path, a.identity.fingerprint)
    assert back.identity == a.identity
    np.testing.assert_array_equal(back.apply(x), a.apply(x))
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["projection"][0, 0] += 1e-3  # a changed file is refused, not silently applied
    np.savez(path, **arrays)
    with pytest.raises(WhiteningRefused, match="hash to"):
        Whitening.load(path)
    with pytest.raises(WhiteningRefused, match="rank"):
        learn_whitening(x[:8], SOURCE, ("a",), dim=12)


def test_whitening_learned_on_the_evaluated_images_is_refused_with_the_reason():
    classes = [f"c{i:03d}" for i in range(200)]
    evaluated, learning = ClassSplit(100, seed=0).split(classes)
    assert len(evaluated) == len(learning) == 100 and not set(evaluated) & set(learning)
    assert ClassSplit(100, seed=0).split(classes) == (evaluated, learning) != ClassSplit(100, seed=1).split(classes)
    x = _vectors()
    honest = learn_whitening(x, SOURCE, learning).identity
    check_disjoint(honest, SOURCE, evaluated)  # disjoint classes of the same split: allowed
    with pytest.raises(WhiteningRefused, match="every image of tiny-imagenet-200/val, the evaluated images"):
        check_disjoint(learn_whitening(x, SOURCE).identity, SOURCE, evaluated)
    with pytest.raises(WhiteningRefused, match="1 evaluated classes"):
        check_disjoint(learn_whitening(x, SOURCE, learning[:-1] + [evaluated[0]]).identity, SOURCE, evaluated)
    other_split = learn_whitening(x, replace(SOURCE, split="train", data_fingerprint="sha256:train")).identity
    check_disjoint(other_split, SOURCE, evaluated)  # another split: allowed, all of it
    with pytest.raises(WhiteningRefused, match="another image list"):
        check_disjoint(honest, replace(SOURCE, data_fingerprint="sha256:other"), evaluated)


def test_a_whitening_is_refused_on_vectors_made_otherwise():
    w = learn_whitening(_vectors(), SOURCE, ("a",))
    w.check_applies_to(SOURCE.with_normalized(True))  # unit length is applied first anyway
    for change in ({"descriptor": "avg"}, {"weights_fingerprint": "sha256:cd"}, {"model": "effnet-lite1"}):
        with pytest.raises(WhiteningRefused, match="learned on other vectors"):
            w.check_applies_to(replace(SOURCE, **change))
