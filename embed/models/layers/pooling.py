"""Global pooling layers for retrieval descriptors: average, max and generalized-mean (GeM) pooling of a
convnet's feature map, and the class token, mean, max or GeM of a ViT's patch tokens.

timm's ``SelectAdaptivePool2d`` offers avg, max, avgmax and catavgmax but no GeM. GeM (Radenović, Tolias,
Chum, "Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI 2018) is
``(mean(clamp(x, eps) ** p)) ** (1 / p)`` per channel: p = 1 is average pooling, p -> inf max pooling.
The clamp keeps the power defined where a map is negative (ConvNeXt's maps are; EfficientNet's ReLU6 maps
are not), as in the authors' code.

Pooling is computed in float32 with autocast off: a bf16 ``pow`` loses the small differences GeM
is there to weigh. No ``from __future__ import annotations`` (TorchScript reads these signatures).
"""

from typing import Tuple

import torch
import torch.nn as nn

__all__ = ["GEM_EPS", "gem", "pool_map", "pool_tokens", "MapPool", "TokenPool"]

GEM_EPS = 1e-6
MAP_KINDS = ("avg", "max", "gem")
TOKEN_KINDS = ("cls", "avg", "max", "gem")


def gem(x: torch.Tensor, p: float = 3.0, dims: Tuple[int, ...] = (-2, -1), eps: float = GEM_EPS) -> torch.Tensor:
    """Generalized mean over ``dims`` (kept as size-1 dims).

    Computed as ``m * mean((x / m) ** p) ** (1 / p)`` with ``m`` the maximum: the same value, but ``x ** p`` of
    a map whose values exceed 1 overflows float32 from p of about 80 (3 ** 81 > 3.4e38)."""
    x = x.clamp(min=eps)
    m = x.amax(dim=dims, keepdim=True)
    return (x / m).pow(p).mean(dim=dims, keepdim=True).pow(1.0 / p) * m


def pool_map(x: torch.Tensor, kind: str, p: float = 3.0, eps: float = GEM_EPS) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 1, 1) by ``kind``: avg, max or gem."""
    with torch.autocast(x.device.type, enabled=False):
        x = x.float()
        if kind == "avg":
            return x.mean(dim=(-2, -1), keepdim=True)
        if kind == "max":
            return x.amax(dim=(-2, -1), keepdim=True)
        if kind == "gem":
            return gem(x, p, (-2, -1), eps)
    raise ValueError(f"unknown feature-map pooling {kind!r}; choose from {', '.join(MAP_KINDS)}")


def pool_tokens(
    x: torch.Tensor, kind: str, num_prefix_tokens: int = 1, p: float = 3.0, eps: float = GEM_EPS
) -> torch.Tensor:
    """(B, N, C) tokens -> (B, C): the class token (cls), or avg, max or gem of the patch tokens only."""
    with torch.autocast(x.device.type, enabled=False):
        x = x.float()
        if kind == "cls":
            if num_prefix_tokens < 1:
                raise ValueError("this model has no class token")
            return x[:, 0]
        patches = x[:, num_prefix_tokens:]
        if kind == "avg":
            return patches.mean(dim=1)
        if kind == "max":
            return patches.amax(dim=1)
        if kind == "gem":
            return gem(patches, p, (1,), eps).squeeze(1)
    raise ValueError(f"unknown token pooling {kind!r}; choose from {', '.join(TOKEN_KINDS)}")


class MapPool(nn.Module):
    """A feature-map pooling as a module; ``flatten`` gives (B, C), else (B, C, 1, 1) for a head's norm."""

    def __init__(self, kind: str = "avg", p: float = 3.0, flatten: bool = True, eps: float = GEM_EPS):
        super().__init__()
        if kind not in MAP_KINDS:
            raise ValueError(f"unknown feature-map pooling {kind!r}; choose from {', '.join(MAP_KINDS)}")
        self.kind, self.p, self.flatten, self.eps = kind, float(p), flatten, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = pool_map(x, self.kind, self.p, self.eps)
        return pooled.flatten(1) if self.flatten else pooled

    def extra_repr(self) -> str:
        return f"kind={self.kind}" + (f", p={self.p:g}" if self.kind == "gem" else "")


class TokenPool(nn.Module):
    """A token pooling as a module: (B, N, C) -> (B, C)."""

    def __init__(self, kind: str = "cls", num_prefix_tokens: int = 1, p: float = 3.0, eps: float = GEM_EPS):
        super().__init__()
        if kind not in TOKEN_KINDS:
            raise ValueError(f"unknown token pooling {kind!r}; choose from {', '.join(TOKEN_KINDS)}")
        self.kind, self.num_prefix_tokens, self.p, self.eps = kind, num_prefix_tokens, float(p), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_tokens(x, self.kind, self.num_prefix_tokens, self.p, self.eps)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, num_prefix_tokens={self.num_prefix_tokens}" + (
            f", p={self.p:g}" if self.kind == "gem" else ""
        )
