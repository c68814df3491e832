"""Split normalization layers: batch-norm statistics on a conv's input, the learnable affine after it.

``SplitNormConv2d`` is the training-time layer of the blog post "Vision Transformers are Overrated"
(https://frankzliu.com/blog/vision-transformers-are-overrated): normalise the input with batch
statistics (no affine), convolve, then apply a per-channel scale and shift to the output.

At inference it folds into one conv with bias, exactly, borders included (``SplitNormConv2d.fuse``);
``timm.utils.reparameterize_model`` applies that to a whole model. A padded conv becomes a
``FusedSplitNormConv2d``, which restores what zero padding of the *normalised* input means; an
unpadded one becomes a plain ``nn.Conv2d``.

Kept apart from the model file, as timm keeps its layers in ``timm.layers``, so that any network
can use them. No ``from __future__ import annotations`` here: TorchScript and FX-then-TorchScript
read these forward signatures, and string annotations reach them as unknown type names.
"""

from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ChannelAffine", "SplitNormConv2d", "FusedSplitNormConv2d"]


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
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            bias=True,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        fused.weight.copy_(weight.to(conv.weight.dtype))
        fused.bias.copy_(bias.to(conv.weight.dtype))
        if isinstance(fused, FusedSplitNormConv2d):
            fused.set_pad_value(mean)
        return fused


class FusedSplitNormConv2d(nn.Conv2d):
    """A zero-padded conv with bias plus an exact correction on its border rows and columns.

    The correction depends only on the input's spatial size (not its values), so it is computed
    once per size, memory format and dtype and cached, laid out like the conv's output so that each
    band is one vectorised add. It touches only the output bands whose receptive field overlaps the
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
        channels_last = (
            ref.dim() == 4 and ref.is_contiguous(memory_format=torch.channels_last) and not ref.is_contiguous()
        )
        key = (height, width, ref.device, ref.dtype, channels_last)
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
        rows = _taps_on_padding(
            height, out_h, self.kernel_size[0], self.stride[0], self.padding[0], self.dilation[0], weight.device
        ).any(dim=1)
        cols = _taps_on_padding(
            width, out_w, self.kernel_size[1], self.stride[1], self.padding[1], self.dilation[1], weight.device
        ).any(dim=1)
        touches = rows[:, None] | cols[None, :]
        corr = torch.where(touches, full - inside, torch.zeros((), dtype=torch.float64))
        corr = corr.to(device=ref.device, dtype=ref.dtype)
        if channels_last:
            corr = corr.contiguous(memory_format=torch.channels_last)
        top = _leading_true(rows)
        bottom = _leading_true(rows.flip(0))
        left = _leading_true(cols)
        right = _leading_true(cols.flip(0))
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
            y[..., :top, :] += corr[..., :top, :]
        if bottom:
            y[..., h - bottom :, :] += corr[..., h - bottom :, :]
        if left:
            y[..., top : h - bottom, :left] += corr[..., top : h - bottom, :left]
        if right:
            y[..., top : h - bottom, w - right :] += corr[..., top : h - bottom, w - right :]
        return y

    def _forward_with_correction_map(self, x: torch.Tensor) -> torch.Tensor:
        # Under torch.compile the size-keyed cache above would break the graph. Here the correction
        # is rebuilt from tensors each call (small: out_channels x out_h x out_w x taps) and its add
        # fuses with the activation that follows.
        y = super().forward(x)
        kh, kw = self.kernel_size
        per_tap = torch.einsum("oikl,i->okl", self.weight, self.pad_value.to(self.weight.dtype))
        rows = _taps_on_padding(
            x.shape[-2], y.shape[-2], kh, self.stride[0], self.padding[0], self.dilation[0], x.device
        )
        cols = _taps_on_padding(
            x.shape[-1], y.shape[-1], kw, self.stride[1], self.padding[1], self.dilation[1], x.device
        )
        on_padding = rows[:, None, :, None] | cols[None, :, None, :]
        corr = torch.einsum("okl,ijkl->oij", per_tap, on_padding.to(per_tap.dtype))
        return y + corr.to(y.dtype)


def _taps_on_padding(
    size: int, out_size: int, kernel: int, stride: int, padding: int, dilation: int, device: torch.device
) -> torch.Tensor:
    """(out_size, kernel) bool: whether tap k of output position i reads padding along one axis."""
    pos = (
        torch.arange(out_size, device=device)[:, None] * stride
        + torch.arange(kernel, device=device)[None, :] * dilation
        - padding
    )
    return (pos < 0) | (pos >= size)


def _leading_true(flags: torch.Tensor) -> int:
    """Length of the run of True at the start of a 1-d bool tensor."""
    false_at = (~flags).nonzero()
    return int(false_at[0, 0]) if len(false_at) else int(flags.numel())
