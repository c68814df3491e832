"""A descriptor's pooling applied to a timm model's ``forward_features`` output, as the model's own head would.

The default pooling is the model's own ``forward_head(x, pre_logits=True)``: exactly the vectors of
``model(x)`` with the classifier removed (timm's global average pool, ConvNeXt's head LayerNorm, a ViT's
class token and ``fc_norm``). Another pooling replaces only the pooling step and keeps what the head does
after it: ConvNeXt's ``NormMlpClassifierHead`` normalises the pooled (B, C, 1, 1) map with its LayerNorm,
a ViT's ``fc_norm`` follows the token pooling. Several heads share one ``forward_features`` output, so one
forward pass gives several descriptors.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn

from embed.common.descriptor import DEFAULT, Descriptor
from embed.models.layers.pooling import MapPool, TokenPool


class OwnHead(nn.Module):
    """The model's own pre-logits head."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = [model]  # a list: not registered as a submodule (no second copy in state_dict / .to())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model[0].forward_head(x, pre_logits=True)  # type: ignore[operator]


class PoolingHead(nn.Module):
    """Another pooling, followed by the parts of the model's head that come after its pooling."""

    def __init__(self, pool: nn.Module, after: List[nn.Module]):
        super().__init__()
        self.pool = pool
        self.after = after  # the model's own modules, not registered here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        for module in self.after:
            x = module(x)
        return x


def pooling_head(model: nn.Module, descriptor: Descriptor, tokens: bool, default_pooling: str) -> nn.Module:
    """The module mapping ``model.forward_features(x)`` to the pooled vectors of ``descriptor``."""
    from timm.layers import NormMlpClassifierHead

    d = descriptor.pooled
    descriptor.check_for(tokens)
    if d.pooling in (DEFAULT, default_pooling):
        return OwnHead(model)
    if tokens:
        after = [m for m in (getattr(model, "fc_norm", None),) if m is not None]
        return PoolingHead(TokenPool(d.pooling, int(getattr(model, "num_prefix_tokens", 1)), d.p), after)
    head = getattr(model, "head", None)
    if isinstance(head, NormMlpClassifierHead):
        return PoolingHead(MapPool(d.pooling, d.p, flatten=False), [head.norm, head.flatten, head.pre_logits])
    if not hasattr(model, "global_pool"):
        raise ValueError(f"{type(model).__name__}: no global pooling found to replace with {d.pooling_name}")
    return PoolingHead(MapPool(d.pooling, d.p, flatten=True), [])
