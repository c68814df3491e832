"""GResNet: a ResNet-50 modernised as in the blog post "Vision Transformers are Overrated".

``import embed.models.gresnet`` registers ``gresnet50`` with timm (``embed.models.registry`` imports it too):

    import embed.models.gresnet, timm
    model = timm.create_model("gresnet50")                         # random init
    model = timm.create_model("gresnet50", pretrained=True)        # the blog's weights (Google Drive, cached)
    feats = timm.create_model("gresnet50", features_only=True, out_indices=(1, 2, 3, 4))  # strides 4..32

Changes against torchvision's ResNet-50 (https://frankzliu.com/blog/vision-transformers-are-overrated):

* ResNet-D: a deep stem of three 3x3 convs (32, 64, 128 channels, stride 2 on the first),
  no max-pool, the stride of a downsampling bottleneck on its 3x3 conv, and 2x2 average
  pooling followed by a stride-1 1x1 conv on downsampling shortcuts.
* Because the max-pool is gone, the first block of the first stage has stride 2 as well.
* SiLU wherever ResNet has ReLU.
* Split normalization (``embed.models.layers.split_norm``): every conv (stem, blocks, shortcuts) first
  normalises its *input* with batch statistics (no affine), and the learnable per-channel scale
  and shift are applied *after* the conv.

At inference the normalisation and the affine fold into the conv (``SplitNormConv2d.fuse``),
exactly, borders included; ``timm.utils.reparameterize_model`` applies it to a whole model, and
the fused model keeps this interface (``forward_intermediates``, ``features_only`` included).

Module names follow torchvision (``conv1``, ``layer1``..``layer4``, ``downsample``, ``fc``) so
checkpoints written by torchvision's reference training scripts load through
``checkpoint_filter_fn``. No ``from __future__ import annotations`` here (see embed/models/layers/split_norm.py).
"""

import math
from typing import Any, Dict, List, Optional, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, LayerType, create_classifier, get_act_layer, get_device_dtype
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._features_fx import register_notrace_module

from embed.models.checkpoint_mapping import CheckpointMismatchError, fit_state_dict, unwrap_checkpoint  # noqa: F401  (re-exported)
from embed.models.gresnet_weights import BLOG_WEIGHTS_DRIVE_ID, BLOG_WEIGHTS_URL
from embed.models.layers.split_norm import ChannelAffine, FusedSplitNormConv2d, SplitNormConv2d

__all__ = [
    "GResNet",
    "SplitNormConv2d",
    "FusedSplitNormConv2d",
    "ChannelAffine",
    "checkpoint_filter_fn",
    "BLOG_WEIGHTS_DRIVE_ID",
    "BLOG_WEIGHTS_URL",
]

# The checkpoint the blog post links: its one definition (embed/models/gresnet_weights.py downloads it from here).

# FX tracing cannot follow the fused conv's size-keyed cache: trace it as one leaf call
register_notrace_module(FusedSplitNormConv2d)


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
        shortcut = x
        if self.downsample is not None:
            shortcut = self.downsample(x)
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        x = self.drop_path(self.conv3(x))
        # in place: conv3's output is a fresh tensor, and a new one would cost an allocation per block
        x += shortcut
        return self.act3(x)


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
        act_layer: LayerType = nn.SiLU,
        zero_init_last: bool = True,
    ):
        super().__init__()
        act_layer = get_act_layer(act_layer)
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
        self.global_pool, self.fc = create_classifier(self.num_features, self.num_classes, pool_type=global_pool)
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
    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new classifier; ``global_pool=''`` removes the pooling too (``forward`` then returns NCHW maps),
        ``None`` keeps the current one."""
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(
            self.num_features, num_classes, pool_type=global_pool, **get_device_dtype(self)
        )
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    def _stages(self) -> List[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The final feature map and the maps at ``feature_info``'s points (stem at stride 2, then each stage).

        Args:
            x: input images, NCHW.
            indices: the last n points if an int, all if None, else the listed indices (0 = stem, 1-4 = stages).
            norm: unused (no final norm in a ResNet), kept for timm's interface.
            stop_early: stop after the last requested stage.
            output_fmt: only 'NCHW'.
            intermediates_only: return the list of maps only.
        """
        assert output_fmt in ("NCHW",), "Output shape must be NCHW."
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        x = self.act1(self.conv1(x))
        if 0 in take_indices:
            intermediates.append(x)
        stages = self._stages()
        if stop_early:
            stages = stages[:max_index]
        for feat_idx, stage in enumerate(stages, start=1):
            if self.grad_checkpointing and not torch.jit.is_scripting() and isinstance(stage, nn.Sequential):
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if feat_idx in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: Union[int, List[int]] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last of ``indices`` (and the head): what ``features_only`` needs."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        for name in ("layer1", "layer2", "layer3", "layer4")[max_index:]:
            setattr(self, name, nn.Identity())
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq([self.layer1, self.layer2, self.layer3, self.layer4], x, flatten=True)
        else:
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.layer3(x)
            x = self.layer4(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: GResNet) -> Dict[str, torch.Tensor]:
    """Fit a GResNet checkpoint onto this model: by name (torchvision reference-script layout), else by
    structure (the author's gist names its modules its own way), strictly: never a partial load.

    Fused models carry a ``pad_value`` buffer that training checkpoints never have. What timm's
    pretrained loader adapts after this filter passes through: a first conv for ``in_chans`` other than
    the checkpoint's 3 (``pretrained_cfg['first_conv']``; its input statistics are spread over the
    channels here), and a classifier for another ``num_classes`` (dropped by timm, the model keeps its new one).
    """
    source = unwrap_checkpoint(state_dict)
    skip: Tuple[str, ...] = ("pad_value",)
    passed_through: Dict[str, torch.Tensor] = {}
    first = model.conv1[0]
    in_chans = first.norm.num_features if isinstance(first, SplitNormConv2d) else first.in_channels
    first_conv_key = "conv1.0.conv.weight"
    if in_chans != 3 and first_conv_key in source:
        passed_through[first_conv_key] = source.pop(first_conv_key)
        skip += (first_conv_key,)
        for key in ("conv1.0.norm.running_mean", "conv1.0.norm.running_var"):
            if key in source:
                source[key] = _spread_channels(source[key], in_chans)
    head = model.get_classifier(name_only=True)
    head_weight = source.get(f"{head}.weight")
    if model.num_classes and head_weight is not None and head_weight.shape[0] != model.num_classes:
        passed_through.update({k: source.pop(k) for k in (f"{head}.weight", f"{head}.bias") if k in source})
        skip += (f"{head}.weight", f"{head}.bias")
    fitted = fit_state_dict(source, model, "GResNet checkpoint", skip_target=skip)
    return {**fitted, **passed_through}


def _spread_channels(stat: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Per-channel input statistics for ``in_chans`` channels from 3, the way timm adapts the conv weight:
    one channel takes their mean (a grey image repeated), more channels repeat them cyclically."""
    if in_chans == 1:
        return stat.mean().view(1)
    return stat.repeat(math.ceil(in_chans / stat.numel()))[:in_chans].clone()


def _blog_weights_overlay(overlay: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``pretrained_cfg_overlay`` with ``file`` set to the cached blog checkpoint, downloaded first if needed.

    timm would fetch ``url`` with torch.hub, which gets Google Drive's confirmation page instead of the
    file; embed.models.gresnet_weights gets past it (and honours RETRIEVAL_GRESNET_URL). A caller's own
    ``file`` or ``state_dict`` wins. timm's ``create_model`` passes no settings through: this is where the
    environment's are read (embed.common.settings names the public boundaries that do).
    """
    overlay = dict(overlay or {})
    if overlay.get("file") or overlay.get("state_dict") is not None:
        return overlay
    from embed.common.settings import current
    from embed.models.gresnet_weights import download_checkpoint  # imports this module: only when weights are asked for

    overlay["file"] = str(download_checkpoint(current()))
    return overlay


def _create_gresnet(variant: str, pretrained: bool = False, **kwargs) -> GResNet:
    if pretrained:
        kwargs["pretrained_cfg_overlay"] = _blog_weights_overlay(kwargs.get("pretrained_cfg_overlay"))
    return build_model_with_cfg(
        GResNet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        **kwargs,
    )


def _cfg(url: str = "", **kwargs) -> Dict[str, Any]:
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 224 / 232,
        "interpolation": "bilinear",
        "crop_mode": "center",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1.0.conv",
        "classifier": "fc",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        # Trained at 176 px with torchvision's reference recipe; evaluated as its eval preset does it:
        # bilinear resize of the shorter side to 232, centre crop 224 (crop_pct = 224 / 232), ImageNet mean/std.
        # Not on the Hugging Face hub: `pretrained=True` downloads the Drive file once (embed/models/gresnet_weights.py).
        "gresnet50.blog_in1k": _cfg(
            url=BLOG_WEIGHTS_URL,
            notes=(
                "trained at 176x176 (torchvision reference recipe), evaluated at 224 after a 232 bilinear resize",
                f"weights: Google Drive file {BLOG_WEIGHTS_DRIVE_ID}, linked from the blog post",
            ),
            origin_url="https://frankzliu.com/blog/vision-transformers-are-overrated",
            license="see the blog post",
        ),
    }
)


@register_model
def gresnet50(pretrained: bool = False, **kwargs) -> GResNet:
    """GResNet-50: ResNet-D + SiLU + split normalization, 25.66M parameters."""
    return _create_gresnet("gresnet50", pretrained, **dict(layers=(3, 4, 6, 3), **kwargs))
