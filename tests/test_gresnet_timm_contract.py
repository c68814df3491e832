"""GResNet as a timm model: the interface timm's own model tests and feature-pyramid users rely on.

Written for this project (not copied from timm), checking the same contract as timm's
tests/test_models.py on small inputs: unpooled maps after ``reset_classifier(0, '')``,
TorchScript, FX tracing that scripts, ``forward_intermediates``/``prune_intermediate_layers``,
``features_only`` with its ``feature_info``, fused and unfused alike, and the pretrained config.
"""

import copy
import math
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from support.data import REPO
from support.models import nontrivial
from support.waits import HANG_S
from timm.data import create_transform, resolve_data_config
from timm.utils import reparameterize_model

import embed.models.gresnet  # noqa: F401  (registers gresnet50 with timm)
from embed.common.settings import RetrievalSettings
from embed.models import gresnet_weights
from embed.models.gresnet import BLOG_WEIGHTS_DRIVE_ID, BLOG_WEIGHTS_URL, SplitNormConv2d

CHANNELS = [128, 256, 512, 1024, 2048]
REDUCTIONS = [2, 4, 8, 16, 32]


def _x(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / a.norm()).item()


@pytest.fixture(scope="module")
def pair():
    """An unfused model with non-trivial statistics and affines, and its fused twin."""
    torch.manual_seed(0)
    model = nontrivial(timm.create_model("gresnet50"), size=64)
    return model, reparameterize_model(model)


@pytest.mark.parametrize("fused", [False, True])
def test_reset_classifier_without_pool_returns_unpooled_maps(pair, fused):
    model = copy.deepcopy(pair[fused])
    x = _x(64)
    with torch.inference_mode():
        feats = model.forward_features(x)
        model.reset_classifier(0)  # pooled features, no classifier
        pooled = model(x)
        model.reset_classifier(0, "")  # no pooling either: forward gives the maps
        maps = model(x)
    assert pooled.shape == (2, 2048) and model.num_classes == 0
    assert maps.shape == (2, 2048, 2, 2)
    assert torch.equal(maps, feats)
    assert torch.allclose(pooled, feats.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)
    # the same through the constructor
    built = timm.create_model("gresnet50", num_classes=0, global_pool="").eval()
    with torch.inference_mode():
        assert built(x).shape == (2, 2048, 2, 2)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated, timm still tests it
def test_torchscript_matches_eager(pair):
    model, _ = pair
    with timm.set_scriptable(True):
        scripted = torch.jit.script(model)
    x = _x(64)
    with torch.inference_mode():
        assert torch.allclose(scripted(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_fx_trace_scripts_and_matches_eager(pair):
    from timm.models import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    model, _ = pair
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    _, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    traced = create_feature_extractor(model, return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs).eval()
    scripted = torch.jit.script(traced)
    x = _x(64)
    with torch.inference_mode():
        ref = model(x)
        assert torch.equal(next(iter(traced(x).values())), ref)
        assert torch.allclose(next(iter(scripted(x).values())), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_forward_intermediates_agree_with_forward_features(pair, fused):
    model = pair[fused]
    size = 72  # 36 -> 18 -> 9 -> 5 -> 3: odd maps on the way down
    x = _x(size)
    with torch.inference_mode():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert [m.shape[1] for m in maps] == CHANNELS
        expected = [size]
        for _ in REDUCTIONS:
            expected.append(math.ceil(expected[-1] / 2))
        assert [m.shape[-1] for m in maps] == expected[1:]
        assert torch.equal(maps[-1], final)
        # a selection, negative-count form and early stop give the same tensors
        some = model.forward_intermediates(x, indices=[1, 3], stop_early=True, intermediates_only=True)
        assert len(some) == 2 and torch.equal(some[0], maps[1]) and torch.equal(some[1], maps[3])
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert torch.equal(last_two[0], maps[3]) and torch.equal(last_two[1], maps[4])


def test_prune_intermediate_layers_keeps_the_requested_maps(pair):
    model = copy.deepcopy(pair[0])
    x = _x(64)
    with torch.inference_mode():
        _, full = model.forward_intermediates(x)
        kept = model.prune_intermediate_layers([0, 1, 2])
        assert kept == [0, 1, 2]
        assert isinstance(model.layer3, nn.Identity) and isinstance(model.layer4, nn.Identity)
        assert model.num_classes == 0 and isinstance(model.fc, nn.Identity)
        pruned = model.forward_intermediates(x, indices=kept, intermediates_only=True)
    assert [torch.equal(a, b) for a, b in zip(pruned, full[:3])] == [True, True, True]


@pytest.mark.parametrize("feature_cls", ["list", "getter"])
def test_features_only_maps_and_feature_info(feature_cls):
    model = timm.create_model("gresnet50", features_only=True, out_indices=(1, 2, 3, 4), feature_cls=feature_cls).eval()
    info = model.feature_info
    assert info.channels() == CHANNELS[1:] and info.reduction() == REDUCTIONS[1:]
    assert info.module_name() == ["layer1", "layer2", "layer3", "layer4"]
    with torch.inference_mode():
        maps = model(_x(96))
    assert [tuple(m.shape) for m in maps] == [(2, c, 96 // r, 96 // r) for c, r in zip(CHANNELS[1:], REDUCTIONS[1:])]
    # default: every point, the stride-2 stem included
    every = timm.create_model("gresnet50", features_only=True, feature_cls=feature_cls)
    assert every.feature_info.channels() == CHANNELS and every.feature_info.reduction() == REDUCTIONS


@pytest.mark.parametrize("size", [96, 97])
def test_fused_feature_pyramid_equals_unfused(size):
    torch.manual_seed(1)
    feats = nontrivial(timm.create_model("gresnet50", features_only=True, out_indices=(1, 2, 3, 4)), size=64, seed=1)
    fused = reparameterize_model(feats)
    assert not any(isinstance(m, SplitNormConv2d) for m in fused.modules())
    x = _x(size, seed=size)
    with torch.inference_mode():
        ref, out = feats(x), fused(x)
    assert [tuple(m.shape) for m in out] == [tuple(m.shape) for m in ref]
    errs = [_rel(a, b) for a, b in zip(ref, out)]
    assert max(errs) < 1e-4, errs


def test_pretrained_cfg_describes_the_blog_weights_and_their_eval_transform(monkeypatch):
    cfg = timm.get_pretrained_cfg("gresnet50.blog_in1k")
    assert cfg.url == BLOG_WEIGHTS_URL and BLOG_WEIGHTS_DRIVE_ID in cfg.url
    assert gresnet_weights.source_url(RetrievalSettings()) == cfg.url  # the downloader's default source is the config's
    assert "gresnet50.blog_in1k" in timm.list_models(pretrained=True)
    model = timm.create_model("gresnet50")
    steps = create_transform(**resolve_data_config(model=model), is_training=False).transforms
    resize, crop = steps[0], steps[1]
    assert type(resize).__name__ == "Resize" and resize.size == 232
    assert resize.interpolation.value == "bilinear"
    assert type(crop).__name__ == "CenterCrop" and tuple(crop.size) == (224, 224)


def _torchvision_style_file(model: nn.Module, path: Path) -> Path:
    sd = {"module." + k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"model": {k: torch.zeros_like(v) for k, v in sd.items()}, "model_ema": sd, "epoch": 599}, path)
    return path


def test_pretrained_loads_through_timm_in_chans_and_features_only(tmp_path):
    torch.manual_seed(3)
    src = nontrivial(timm.create_model("gresnet50"), size=64, seed=3)
    path = _torchvision_style_file(src, tmp_path / "stand_in.pth")  # a stand-in file, not the author's weights
    overlay = dict(file=str(path))
    model = timm.create_model("gresnet50", pretrained=True, pretrained_cfg_overlay=overlay).eval()
    x = _x(64)
    with torch.inference_mode():
        assert torch.equal(model(x), src(x))
    grey = timm.create_model("gresnet50", pretrained=True, pretrained_cfg_overlay=overlay, in_chans=1, num_classes=5)
    stem = grey.conv1[0]
    assert stem.conv.weight.shape[1] == 1 and grey.fc.out_features == 5
    assert torch.allclose(stem.conv.weight, src.conv1[0].conv.weight.sum(dim=1, keepdim=True))
    assert torch.allclose(stem.norm.running_mean, src.conv1[0].norm.running_mean.mean().view(1))
    feats = timm.create_model("gresnet50", pretrained=True, pretrained_cfg_overlay=overlay, features_only=True).eval()
    with torch.inference_mode():
        assert torch.equal(feats(x)[-1], src.forward_features(x))


def test_pretrained_without_a_file_uses_the_download_cache(tmp_path, monkeypatch):
    """pretrained=True goes through embed.models.gresnet_weights (Drive needs gdown): here its cache answers."""
    monkeypatch.setenv("RETRIEVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(gresnet_weights.URL_ENV, "http://127.0.0.1:9/gresnet50.pth")  # nothing listens there
    torch.manual_seed(4)
    src = timm.create_model("gresnet50").eval()
    with pytest.raises(Exception, match="--checkpoint PATH"):
        timm.create_model("gresnet50", pretrained=True)
    cached = gresnet_weights.cache_path(RetrievalSettings.from_environment())  # where timm's path looks
    cached.parent.mkdir(parents=True, exist_ok=True)
    _torchvision_style_file(src, cached)
    model = timm.create_model("gresnet50", pretrained=True).eval()
    x = _x(64, batch=1)
    with torch.inference_mode():
        assert torch.equal(model(x), src(x))


def test_the_documented_import_registers_gresnet50_in_a_fresh_interpreter():
    code = "import embed.models.gresnet, timm; print(timm.create_model('gresnet50').num_features)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=HANG_S)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "2048"
