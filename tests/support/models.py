"""GResNet test models with non-trivial weights: fusion is only tested where it has something to fold."""

import torch
import torch.nn as nn

from embed.models.layers.split_norm import SplitNormConv2d


def nontrivial(model: nn.Module, size: int = 96, seed: int = 0) -> nn.Module:
    """Random affines and running statistics from a few training-mode batches."""
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
