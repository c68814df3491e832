"""GResNet: a ResNet-50 modernised as in the blog post "Vision Transformers are Overrated".

Changes against torchvision's ResNet-50 (https://frankzliu.com/blog/vision-transformers-are-overrated):

* ResNet-D: a deep stem of three 3x3 convs (32, 64, 128 channels, stride 2 on the first),
  no max-pool, the stride of a downsampling bottleneck on its 3x3 conv, and 2x2 average
  pooling followed by a stride-1 1x1 conv on downsampling shortcuts.
* Because the max-pool is gone, the first block of the first stage has stride 2 as well.
* SiLU wherever ResNet has ReLU.
* Split normalization: every conv (stem, blocks, shortcuts) first normalises its *input* with
  batch statistics (no affine), and the learnable per-channel scale and shift are applied
  *after* the conv.

At inference the normalisation and the affine fold into the conv (``SplitNormConv2d.fuse``),
exactly, borders included; ``timm.utils.reparameterize_model`` applies it to a whole model.

Module names follow torchvision (``conv1``, ``layer1``..``layer4``, ``downsample``, ``fc``) so
checkpoints written by torchvision's reference training scripts load through
``checkpoint_filter_fn``.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from embed.models.checkpoint_mapping import CheckpointMismatchError, fit_state_dict, unwrap_checkpoint  # noqa: F401  (re-exported)

__all__ = ["GResNet", "SplitNormConv2d", "FusedSplitNormConv2d", "checkpoint_filter_fn"]


class ChannelAffine(nn.Module):
    """Learnable per-channel scale and shift: the affine half of split normalization."""

    def __init__(self, num_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


class SplitNormConv2d(nn.Module):
    """Batch-norm statistics on the input, conv, then the per-channel affine on the output."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            kernel_size: int = 1,
            stride: int = 1,
            eps: float = 1e-5,
            momentum: float = 0.1,
    ):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_chs, eps=eps, momentum=momentum, affine=False)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2, bias=False)
        self.affine = ChannelAffine(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.affine(self.conv(self.norm(x)))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """One conv with bias computing exactly what this module computes in eval mode.

        With mu, sigma the running statistics, gamma, beta the affine:
            y = gamma * conv(pad0((x - mu) / sigma)) + beta
        Zero padding of the *normalised* input equals padding the raw input with mu, so
            y = conv(pad0(x), W') + b + c,   W' = gamma W / sigma,   b = beta - sum(W' mu)
        where c is zero wherever the kernel lies inside the image and, on the border bands,
        adds back W' mu for the taps that fall on padding. A naive fold (c = 0) is wrong on
        every border pixel of a padded conv.
        """
        conv = self.conv
        inv_std = torch.rsqrt(self.norm.running_var.double() + self.norm.eps)
        mean = self.norm.running_mean.double()
        gamma = self.affine.weight.double()
        weight = conv.weight.double() * inv_std.view(1, -1, 1, 1) * gamma.view(-1, 1, 1, 1)
        bias = self.affine.bias.double() - (weight * mean.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
        fused_cls = FusedSplitNormConv2d if any(p > 0 for p in conv.padding) else nn.Conv2d
        fused = fused_cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            bias=True, device=conv.weight.device, dtype=conv.weight.dtype,
        )
        fused.weight.copy_(weight.to(conv.weight.dtype))
        fused.bias.copy_(bias.to(conv.weight.dtype))
        if isinstance(fused, FusedSplitNormConv2d):
            fused.set_pad_value(mean)
        return fused


class FusedSplitNormConv2d(nn.Conv2d):
    """A zero-padded conv with bias plus an exact correction on its border rows and columns.

    The correction depends only on the input's spatial size (not its values), so it is computed
    once per size and cached; it touches only the output bands whose receptive field overlaps the
    padding, which keeps the fused conv as cheap as a plain one. Inside ``torch.compile`` the same
    correction is built from tensors instead, so the whole model stays one graph.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("pad_value", torch.zeros(self.in_channels), persistent=True)
        self._border_cache: Dict[Tuple, Tuple[torch.Tensor, int, int, int, int]] = {}

    @torch.no_grad()
    def set_pad_value(self, mean: torch.Tensor) -> None:
        self.pad_value.copy_(mean.to(self.pad_value.dtype))
        self._border_cache.clear()

    def _apply(self, fn, *args, **kwargs):
        # a device or dtype move invalidates cached corrections
        self._border_cache = {}
        return super()._apply(fn, *args, **kwargs)

    @torch.no_grad()
    def _border_correction(self, height: int, width: int, ref: torch.Tensor):
        key = (height, width, ref.device, ref.dtype)
        hit = self._border_cache.get(key)
        if hit is not None:
            return hit
        # c = (sum of W' mu over all taps) - (the same sum over the taps inside the image)
        weight = self.weight.double()
        mu = self.pad_value.double().view(1, -1, 1, 1)
        mu_img = mu.expand(1, self.in_channels, height, width)
        inside = F.conv2d(mu_img, weight, None, self.stride, self.padding, self.dilation, self.groups)
        full = (weight * mu).sum(dim=(1, 2, 3)).view(1, -1, 1, 1)
        # which outputs have taps on the padding is geometry, not values; rows and columns separate
        out_h, out_w = inside.shape[-2:]
        rows = _taps_on_padding(height, out_h, self.kernel_size[0], self.stride[0], self.padding[0], self.dilation[0],
                                weight.device).any(dim=1)
        cols = _taps_on_padding(width, out_w, self.kernel_size[1], self.stride[1], self.padding[1], self.dilation[1],
                                weight.device).any(dim=1)
        touches = rows[:, None] | cols[None, :]
        corr = torch.where(touches, (full - inside)[0], torch.zeros((), dtype=torch.float64))
        top = _leading_true(rows)
        bottom = _leading_true(rows.flip(0))
        left = _leading_true(cols)
        right = _leading_true(cols.flip(0))
        corr = corr.to(device=ref.device, dtype=ref.dtype)
        hit = (corr, top, min(bottom, out_h - top), left, min(right, out_w - left))
        self._border_cache[key] = hit
        return hit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return self._forward_with_correction_map(x)
        y = super().forward(x)
        corr, top, bottom, left, right = self._border_correction(x.shape[-2], x.shape[-1], y)
        h, w = y.shape[-2:]
        if top:
            y[..., :top, :] += corr[:, :top, :]
        if bottom:
            y[..., h - bottom:, :] += corr[:, h - bottom:, :]
        if left:
            y[..., top:h - bottom, :left] += corr[:, top:h - bottom, :left]
        if right:
            y[..., top:h - bottom, w - right:] += corr[:, top:h - bottom, w - right:]
        return y


    def _forward_with_correction_map(self, x: torch.Tensor) -> torch.Tensor:
        # Under torch.compile the size-keyed cache above would break the graph. Here the correction
        # is rebuilt from tensors each call (small: out_channels x out_h x out_w x taps) and its add
        # fuses with the activation that follows.
        y = super().forward(x)
        kh, kw = self.kernel_size
        per_tap = torch.einsum("oikl,i->okl", self.weight, self.pad_value.to(self.weight.dtype))
        rows = _taps_on_padding(x.shape[-2], y.shape[-2], kh, self.stride[0], self.padding[0], self.dilation[0], x.device)
        cols = _taps_on_padding(x.shape[-1], y.shape[-1], kw, self.stride[1], self.padding[1], self.dilation[1], x.device)
        on_padding = rows[:, None, :, None] | cols[None, :, None, :]
        corr = torch.einsum("okl,ijkl->oij", per_tap, on_padding.to(per_tap.dtype))
        return y + corr.to(y.dtype)


def _taps_on_padding(size: int, out_size: int, kernel: int, stride: int, padding: int, dilation: int,
                     device: torch.device) -> torch.Tensor:
    """(out_size, kernel) bool: whether tap k of output position i reads padding along one axis."""
    pos = torch.arange(out_size, device=device)[:, None] * stride + torch.arange(kernel, device=device)[None, :] * dilation - padding
    return (pos < 0) | (pos >= size)


def _leading_true(flags: torch.Tensor) -> int:
    """Length of the run of True at the start of a 1-d bool tensor."""
    false_at = (~flags).nonzero()
    return int(false_at[0, 0]) if len(false_at) else int(flags.numel())


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
            self,
            in_chs: int,
            planes: int,
            stride: int = 1,
            act_layer: Type[nn.Module] = nn.SiLU,
            drop_path: float = 0.0,
    ):
        super().__init__()
        out_chs = planes * self.expansion
        self.conv1 = SplitNormConv2d(in_chs, planes, 1)
        self.act1 = act_layer(inplace=True)
        self.conv2 = SplitNormConv2d(planes, planes, 3, stride=stride)
        self.act2 = act_layer(inplace=True)
        self.conv3 = SplitNormConv2d(planes, out_chs, 1)
        self.act3 = act_layer(inplace=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if stride != 1 or in_chs != out_chs:
            pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
            self.downsample = nn.Sequential(pool, SplitNormConv2d(in_chs, out_chs, 1))
        else:
            self.downsample = None

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.affine.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        x = self.conv3(x)
        return self.act3(self.drop_path(x) + shortcut)


class GResNet(nn.Module):
    """ResNet-D with SiLU and split normalization; timm's ResNet interface."""

    def __init__(
            self,
            layers: Tuple[int, ...] = (3, 4, 6, 3),
            stem_chs: Tuple[int, int, int] = (32, 64, 128),
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            act_layer: Type[nn.Module] = nn.SiLU,
            zero_init_last: bool = True,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.conv1 = nn.Sequential(
            SplitNormConv2d(in_chans, stem_chs[0], 3, stride=2),
            act_layer(inplace=True),
            SplitNormConv2d(stem_chs[0], stem_chs[1], 3),
            act_layer(inplace=True),
            SplitNormConv2d(stem_chs[1], stem_chs[2], 3),
        )
        self.act1 = act_layer(inplace=True)
        self.feature_info = [dict(num_chs=stem_chs[2], reduction=2, module="act1")]

        in_chs = stem_chs[2]
        total_blocks = sum(layers)
        block_idx = 0
        reduction = 2
        for stage_idx, (depth, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = []
            for i in range(depth):
                # every stage opens with stride 2, the first too: it stands in for the dropped max-pool
                dpr = drop_path_rate * block_idx / max(total_blocks - 1, 1)
                blocks.append(Bottleneck(in_chs, planes, stride=2 if i == 0 else 1, act_layer=act_layer, drop_path=dpr))
                in_chs = planes * Bottleneck.expansion
                block_idx += 1
            reduction *= 2
            name = f"layer{stage_idx + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=name))

        self.num_features = self.head_hidden_size = in_chs
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    m.zero_init_last()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r"^conv1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                from timm.models._manipulate import checkpoint_seq
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: GResNet) -> Dict[str, torch.Tensor]:
    """Fit a GResNet checkpoint onto this model: by name (torchvision reference-script layout), else by
    structure (the author's gist names its modules its own way), strictly: never a partial load.

    Fused models carry a ``pad_value`` buffer that training checkpoints never have.
    """
    return fit_state_dict(state_dict, model, "GResNet checkpoint", skip_target=("pad_value",))


def _create_gresnet(variant: str, pretrained: bool = False, **kwargs) -> GResNet:
    return build_model_with_cfg(
        GResNet, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        **kwargs,
    )


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 224 / 232, "interpolation": "bilinear", "crop_mode": "center",
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1.0.conv", "classifier": "fc",
        "license": "see the blog post", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    # Trained at 176 px with torchvision's reference recipe, evaluated at 224 (resize 232, crop 224).
    # The author's checkpoint is not on the Hugging Face hub: embed/gresnet_weights.py downloads it from
    # Google Drive on first use, or pass it with --checkpoint.
    "gresnet50.blog_in1k": _cfg(
        notes=("trained at 176x176 (torchvision reference recipe), evaluated at 224 after a 232 resize",),
        origin_url="https://frankzliu.com/blog/vision-transformers-are-overrated",
    ),
})


@register_model
def gresnet50(pretrained: bool = False, **kwargs) -> GResNet:
    """GResNet-50: ResNet-D + SiLU + split normalization, 25.66M parameters."""
    return _create_gresnet("gresnet50", pretrained, **dict(layers=(3, 4, 6, 3), **kwargs))
