"""Model registry: short names -> timm architectures, feature dims, preprocessing and where weights come from.

Weights are resolved by ``embed.models.weights`` (one ordered list of sources); this module builds the
model around them: eval mode, split-norm fusion for GResNet, and the eval transform of the weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Optional

import torch.nn as nn

from embed.common.settings import RetrievalSettings, given_or_current
from embed.models import gresnet as _gresnet  # noqa: F401  (registers gresnet50 with timm)
from embed.models.catalog import ModelSpec, get_spec
from embed.models.weights import WeightsInfo
from embed.models.weights import resolve as resolve_weights

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: nn.Module
    weights: WeightsInfo
    data_config: Dict
    transform: Callable
    fused: bool = False


def load_model(
    name: str,
    checkpoint: Optional[Path] = None,
    random_init: bool = False,
    with_head: bool = False,
    settings: Optional[RetrievalSettings] = None,
) -> LoadedModel:
    """Build a model in eval mode with weights resolved as described in the module docstring.

    ``with_head=True`` keeps the classifier (tests use it to check that weights really are right);
    the extraction pipeline always uses the pooled pre-logits (``num_classes=0``). ``settings`` say where the
    download cache is and what it downloads (the entry point's; a Python caller may pass none: the environment's).
    """
    from timm.data import create_transform, resolve_model_data_config

    spec = get_spec(name)
    kwargs = {} if with_head else {"num_classes": 0}
    model, weights = resolve_weights(spec, checkpoint, random_init, kwargs, given_or_current(settings))
    model.eval()
    if spec.fuse:
        from timm.utils import reparameterize_model

        model = reparameterize_model(model)
    data_config = resolve_model_data_config(model)
    transform = create_transform(**data_config, is_training=False)
    if spec.dim < 0:
        # any timm model: its own modules say whether it is a convnet (a ViT has one conv, its patch embedding)
        convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
        # timm models set num_features as a plain int; nn.Module types its attributes Tensor | Module
        tokens = int(getattr(model, "num_prefix_tokens", 0)) > 0 and getattr(model, "global_pool", "") == "token"
        spec = replace(spec, dim=int(model.num_features), channels_last=convs > 1, tokens=tokens)  # type: ignore[arg-type]
    return LoadedModel(spec, model, weights, data_config, transform, spec.fuse)
