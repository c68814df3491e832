import pytest
import timm
import torch
import torch.nn as nn
from support.models import nontrivial
from timm.utils import reparameterize_model

from embed.models.gresnet import (
    CheckpointMismatchError,
    FusedSplitNormConv2d,
    GResNet,
    SplitNormConv2d,
    checkpoint_filter_fn,
)


@pytest.fixture(scope="module")
def trained_pair():
    torch.manual_seed(0)
    model = nontrivial(timm.create_model("gresnet50", num_classes=0))
    return model, reparameterize_model(model)


def test_parameter_count():
    with_head = sum(p.numel() for p in timm.create_model("gresnet50").parameters())
    without = sum(p.numel() for p in timm.create_model("gresnet50", num_classes=0).parameters())
    assert round(with_head / 1e6, 2) == 25.66
    assert with_head - without == 2048 * 1000 + 1000


@pytest.mark.parametrize("size", [64, 176, 193, 224])
def test_output_shapes(size):
    model = timm.create_model("gresnet50").eval()
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        feats = model.forward_features(x)
        assert feats.shape == (2, 2048, -(-size // 32), -(-size // 32))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 2048)
        assert model(x).shape == (2, 1000)


def test_architecture_matches_the_blog():
    model = timm.create_model("gresnet50")
    stem = [m for m in model.conv1 if isinstance(m, SplitNormConv2d)]
    assert [m.conv.out_channels for m in stem] == [32, 64, 128]
    assert [m.conv.stride for m in stem] == [(2, 2), (1, 1), (1, 1)]
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        first = stage[0]
        assert first.conv1.conv.stride == (1, 1) and first.conv2.conv.stride == (2, 2)
        pool, proj = first.downsample
        assert isinstance(pool, nn.AvgPool2d) and pool.kernel_size == 2
        assert proj.conv.kernel_size == (1, 1) and proj.conv.stride == (1, 1)
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [3, 4, 6, 3]
    # split norm: statistics on the conv input channels, affine on its output channels
    m = model.layer2[0].conv2
    assert m.norm.num_features == m.conv.in_channels and not m.norm.affine
    assert m.affine.weight.shape[0] == m.conv.out_channels


def test_split_norm_trains_like_batchnorm():
    m = SplitNormConv2d(3, 4, 3)
    ref = nn.BatchNorm2d(3, affine=False)
    x = torch.randn(8, 3, 10, 10) * 2 + 1
    m.train()
    ref.train()
    m(x)
    ref(x)
    assert torch.allclose(m.norm.running_mean, ref.running_mean)
    assert torch.allclose(m.norm.running_var, ref.running_var)


@pytest.mark.parametrize(
    "k,stride,h,w",
    [(3, 1, 7, 9), (3, 2, 8, 8), (3, 2, 9, 7), (3, 1, 1, 1), (3, 2, 2, 3), (3, 2, 5, 4), (1, 1, 5, 6), (1, 2, 6, 5)],
)
def test_module_fusion_is_exact_on_borders(k, stride, h, w):
    torch.manual_seed(k * 100 + h * 10 + w)
    m = SplitNormConv2d(5, 6, k, stride)
    m.train()
    for _ in range(3):
        m(torch.randn(4, 5, h, w) * 3 + torch.randn(1, 5, 1, 1) * 4)
    with torch.no_grad():
        m.affine.weight.normal_()
        m.affine.bias.normal_()
    m.eval()
    fused = m.fuse()
    assert type(fused) in (nn.Conv2d, FusedSplitNormConv2d) and fused.bias is not None
    x = torch.randn(3, 5, h, w) * 3 + 2
    with torch.no_grad():
        ref, out = m(x), fused(x)
        assert (ref - out).abs().max() <= 1e-5 * ref.abs().max()
        if isinstance(fused, FusedSplitNormConv2d):
            # the formulation used inside torch.compile graphs, checked on the same borders
            graph_out = fused._forward_with_correction_map(x)
            assert (ref - graph_out).abs().max() <= 1e-5 * ref.abs().max()


def test_naive_fold_would_be_wrong_on_borders():
    # guards the test above: with non-zero means, zero padding of x is not zero padding of (x-mu)/sigma
    torch.manual_seed(1)
    m = SplitNormConv2d(4, 4, 3)
    m.norm.running_mean.fill_(3.0)
    m.eval()
    fused = m.fuse()
    naive = nn.Conv2d(4, 4, 3, padding=1)
    naive.load_state_dict({"weight": fused.weight, "bias": fused.bias})
    x = torch.randn(1, 4, 6, 6) + 3
    with torch.no_grad():
        err_naive = (naive(x) - m(x)).abs()
        err_fused = (fused(x) - m(x)).abs()
    assert err_naive[..., 0, :].max() > 1e-2 and err_naive[..., 2:4, 2:4].max() < 1e-4
    assert err_fused.max() < 1e-4


@pytest.mark.parametrize("size", [176, 224, 193])
def test_model_fusion_relative_error(trained_pair, size):
    model, fused = trained_pair
    assert not any(isinstance(m, SplitNormConv2d) for m in fused.modules())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.inference_mode():
        a, b = model(x), fused(x)
    rel = ((a - b).norm() / a.norm()).item()
    assert rel < 1e-4, rel


@pytest.mark.slow
def test_fused_model_compiles_into_one_graph(trained_pair):
    # a graph break here made the compiled model slower than eager; fullgraph=True fails on any break
    model, fused = trained_pair
    compiled = torch.compile(fused, fullgraph=True)
    x = torch.randn(2, 3, 97, 97, generator=torch.Generator().manual_seed(97))
    with torch.inference_mode():
        a, b = model(x), compiled(x)
    rel = ((a - b).norm() / a.norm()).item()
    assert rel < 1e-4, rel


def test_pipeline_uses_fused_model():
    from embed.models.registry import load_model

    loaded = load_model("gresnet", random_init=True)
    assert loaded.fused
    assert not any(isinstance(m, SplitNormConv2d) for m in loaded.model.modules())


def _torchvision_style_checkpoint(model: GResNet):
    sd = model.state_dict()
    ema = {"module." + k: v.clone() for k, v in sd.items()}
    ema["n_averaged"] = torch.tensor(100)
    stale = {"module." + k: torch.zeros_like(v) for k, v in sd.items()}
    return {"model": stale, "model_ema": ema, "optimizer": {}, "epoch": 599, "args": None}


def test_checkpoint_filter_prefers_ema_and_strips_prefixes(trained_pair, tmp_path):
    model, _ = trained_pair
    src = timm.create_model("gresnet50")
    nontrivial(src, seed=3)
    ckpt = _torchvision_style_checkpoint(src)
    path = tmp_path / "gresnet_ema.pth"
    torch.save(ckpt, path)
    dst = timm.create_model("gresnet50")
    dst.load_state_dict(checkpoint_filter_fn(torch.load(path, weights_only=False), dst))
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert torch.equal(a, b), k
    # and through the registry's --checkpoint path, which also fuses
    from embed.models.registry import load_model

    loaded = load_model("gresnet", checkpoint=path)
    assert loaded.weights.source == "checkpoint" and loaded.weights.fingerprint.startswith("sha256:")
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        src.eval()
        ref = src.forward_head(src.forward_features(x), pre_logits=True)
        assert torch.allclose(loaded.model(x), ref, rtol=1e-4, atol=1e-4)


def test_checkpoint_filter_accepts_bare_state_dict():
    src = timm.create_model("gresnet50")
    dst = timm.create_model("gresnet50", num_classes=0)
    out = checkpoint_filter_fn(src.state_dict(), dst)
    dst.load_state_dict(out)


def test_wrong_checkpoint_lists_missing_and_unexpected_keys():
    resnet = timm.create_model("resnet50d").state_dict()
    with pytest.raises(CheckpointMismatchError) as e:
        checkpoint_filter_fn({"model": resnet}, timm.create_model("gresnet50"))
    msg = str(e.value)
    # names differ and the structure too: the message lists what could not be placed, on both sides
    assert "does not fit gresnet50" in msg and "could not be placed" in msg and "layer4.2.bn3.running_var" in msg


def test_timm_api():
    model = timm.create_model("gresnet50", num_classes=10, drop_path_rate=0.05)
    assert model.get_classifier().out_features == 10
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2048)
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)
    assert model.pretrained_cfg["interpolation"] == "bilinear"
    assert abs(model.pretrained_cfg["crop_pct"] - 224 / 232) < 1e-9
    feats = timm.create_model("gresnet50", features_only=True, out_indices=(1, 2, 3, 4))
    shapes = [f.shape[1] for f in feats(torch.randn(1, 3, 64, 64))]
    assert shapes == [256, 512, 1024, 2048]
