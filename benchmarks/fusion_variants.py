"""GResNet variants that the paired benchmark times beside the fused model, to say where its cost comes from.

* ``naive_fold``: the fused model without its border correction (a plain conv with bias). Wrong on every
  border pixel of a padded conv, so never used for features: it is the ceiling any exact fold can reach.
* ``mean_subtract``: the other exact fold, ``conv(pad0(x - mu), W') + beta``: a pass over each padded conv's
  input instead of an add on its output's border bands.
* ``postnorm_twin``: GResNet's own architecture with each split-norm conv replaced by conv -> BatchNorm2d
  (eval, unfused): what a ResNet-D with SiLU of GResNet's exact size costs with ordinary batch norm.
  Its batch norms are left unfused, as timm's ``resnet50d`` runs them; folded, they would cost what
  ``naive_fold`` costs. ``resnet50d`` itself is not GResNet's network: GResNet's stem is 32/64/128 wide with its
  stride on the first conv and no max-pool, so the 64->128 3x3 conv and the first block's 1x1 conv run at 112x112,
  about 22% more multiply-adds at 224 px (``macs``: convolutions and matrix products only, no elementwise work).
* ``resnet50d_splitnorm``: the other way round, resnet50d's geometry (stem 32/32/64, max-pool, first stage at
  stride 1) built from GResNet's layers (split-norm convs, SiLU, its bottleneck). Fused, and timed beside
  ``resnet50d_silu``, it says what split norm costs once folded where the stem is not wider.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Tuple

import torch
import torch.nn as nn

from embed.models.layers.split_norm import FusedSplitNormConv2d, SplitNormConv2d


def _conv_args(conv: nn.Conv2d) -> Dict[str, Any]:
    return dict(
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=True,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )


class MeanSubtractConv2d(nn.Conv2d):
    """``conv(pad0(x - mu), W') + beta``: exact, like the border correction, by another route."""

    def __init__(self, fused: FusedSplitNormConv2d):
        super().__init__(**_conv_args(fused))
        pad_value = fused.pad_value
        assert isinstance(pad_value, torch.Tensor) and fused.bias is not None and self.bias is not None
        mu = pad_value.double().view(1, -1, 1, 1)
        with torch.no_grad():
            self.weight.copy_(fused.weight)
            # the fused bias has sum(W' mu) taken out; the mean is taken out of the input instead (in float64:
            # adding back what was subtracted loses digits to cancellation otherwise)
            beta = fused.bias.double() + (fused.weight.double() * mu).sum(dim=(1, 2, 3))
            self.bias.copy_(beta.to(fused.weight.dtype))
        mu = mu.to(fused.weight.dtype)
        self.mean: torch.Tensor
        self.register_buffer("mean", mu.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x - self.mean.to(x.dtype))


def _plain_conv(fused: FusedSplitNormConv2d) -> nn.Conv2d:
    conv = nn.Conv2d(**_conv_args(fused))
    assert fused.bias is not None and conv.bias is not None
    with torch.no_grad():
        conv.weight.copy_(fused.weight)
        conv.bias.copy_(fused.bias)
    return conv


def _postnorm(layer: SplitNormConv2d) -> nn.Module:
    conv = copy.deepcopy(layer.conv)
    bn = nn.BatchNorm2d(conv.out_channels, eps=layer.norm.eps)
    with torch.no_grad():
        bn.weight.copy_(layer.affine.weight)
        bn.bias.copy_(layer.affine.bias)
    return nn.Sequential(conv, bn)


def _replace(model: nn.Module, kind: type, make: Callable[[Any], nn.Module]) -> nn.Module:
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, kind):
                setattr(module, child_name, make(child))
    return model.eval()


def naive_fold(fused_model: nn.Module) -> nn.Module:
    return _replace(fused_model, FusedSplitNormConv2d, _plain_conv)


def mean_subtract(fused_model: nn.Module) -> nn.Module:
    return _replace(fused_model, FusedSplitNormConv2d, MeanSubtractConv2d)


def postnorm_twin(unfused_model: nn.Module) -> nn.Module:
    return _replace(unfused_model, SplitNormConv2d, _postnorm)


def resnet50d_splitnorm() -> nn.Module:
    """resnet50d's multiply-adds exactly, with GResNet's layers: unfused, random init, no classifier. For timing:
    its ``act1`` holds the max-pool too, and ``feature_info`` is GResNet's (not meant for ``features_only``)."""
    from embed.models.gresnet import Bottleneck, GResNet

    model = GResNet(stem_chs=(32, 32, 64), num_classes=0)
    # GResNet's first block takes the stride the dropped max-pool had; resnet50d pools in the stem instead
    model.act1 = nn.Sequential(nn.SiLU(inplace=True), nn.MaxPool2d(3, 2, 1))
    layer1 = model.layer1
    assert isinstance(layer1, nn.Sequential)
    layer1[0] = Bottleneck(64, 64, stride=1)
    return model.eval()


def nontrivial(model: nn.Module, size: int = 96, seed: int = 0) -> nn.Module:
    """Random affines and running statistics from a few training-mode batches: a fresh model has mean 0, variance 1
    and zero-initialised last affines, for which even the naive fold is exact. The tests use it for the same reason."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SplitNormConv2d):
                m.affine.weight.copy_(torch.rand(m.affine.weight.shape, generator=g) + 0.5)
                m.affine.bias.copy_(torch.randn(m.affine.bias.shape, generator=g) * 0.1)
        model.train()
        for _ in range(3):
            model(torch.randn(4, 3, size, size, generator=g) * 1.3 + 0.4)
    return model.eval()


def stages(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """A GResNet or a timm ResNet cut where the two differ: the stem (max-pool included) and the first block, which
    GResNet runs at 112 px, then the rest, which has the same geometry in both."""
    stem = (
        nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)  # type: ignore[arg-type]
        if hasattr(model, "bn1")
        else nn.Sequential(model.conv1, model.act1)  # type: ignore[arg-type]
    )
    layer1 = model.layer1
    assert isinstance(layer1, nn.Sequential)
    return [
        ("stem", stem),
        ("layer1.0", layer1[0]),
        ("layer1.1-2", layer1[1:]),
        *((name, getattr(model, name)) for name in ("layer2", "layer3", "layer4")),
    ]


@torch.no_grad()
@torch.no_grad()
def max_relative_error(model: nn.Module, reference: nn.Module, size: int = 224, batch: int = 2) -> float:
    """max |f(x) - g(x)| / max |g(x)| on the final feature maps (borders included) of seeded inputs (fp32)."""
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    got, want = model.eval().forward_features(x), reference.eval().forward_features(x)  # type: ignore[operator]
    return float((got - want).abs().max() / want.abs().max())


@torch.no_grad()
def macs(model: nn.Module, size: int = 224) -> int:
    """Multiply-adds of convolutions and matrix products for one image (elementwise work, such as batch norm, the
    mean subtraction or the border add, is not counted), after a first call so cached corrections are not."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, size, size)
    model.eval()(x)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops() // 2)


__all__ = [
    "nontrivial",
    "naive_fold",
    "mean_subtract",
    "postnorm_twin",
    "resnet50d_splitnorm",
    "stages",
    "max_relative_error",
    "macs",
]
