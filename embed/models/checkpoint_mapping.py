"""Fit a checkpoint's tensors onto a model: by name where the names match, otherwise by structure.

Third-party checkpoints name their tensors after their own module tree (lukemelas' EfficientNet:
``_blocks.3._bn1.weight``; a blog author's gist: anything). When the names do not match but the
network is the same, the tensors still come in the same order with the same shapes, so they are
paired by order within each shape: every checkpoint tensor goes to exactly one model tensor. When
that is impossible the error lists the tensors that could not be placed, never a partial load.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

if TYPE_CHECKING:  # torch loads with the model; the error class below is imported by torch-free callers
    import torch
    import torch.nn as nn

# running-stat counters are not weights; BatchNorm fills in a missing one by itself
IGNORED_SUFFIXES = ("num_batches_tracked", "n_averaged")


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose keys or shapes do not fit the model."""


def unwrap_checkpoint(checkpoint: Any) -> Dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint, EMA weights preferred.

    Accepts torchvision reference-script checkpoints (``model``, ``model_ema``, ``optimizer``...),
    timm/other wrappers (``state_dict``, ``state_dict_ema``) and bare state dicts; strips
    ``module.`` (DDP, AveragedModel) prefixes and drops AveragedModel's ``n_averaged``.
    """
    if isinstance(checkpoint, dict):
        for key in ("model_ema", "state_dict_ema", "model", "state_dict"):
            inner = checkpoint.get(key)
            if isinstance(inner, dict) and inner:
                checkpoint = inner
                break
    if not isinstance(checkpoint, dict):
        raise CheckpointMismatchError(f"checkpoint is a {type(checkpoint).__name__}, not a state dict")
    import torch

    out = {}
    for key, value in checkpoint.items():
        if not torch.is_tensor(value):
            continue
        while key.startswith("module."):
            key = key[len("module.") :]
        if key == "n_averaged":
            continue
        out[key] = value
    return out


def fit_state_dict(
    state_dict: Dict[str, Any], model: nn.Module, label: str = "checkpoint", skip_target: Tuple[str, ...] = ()
) -> Dict[str, torch.Tensor]:
    """A state dict in ``model``'s names holding every one of its weights, or CheckpointMismatchError.

    ``skip_target`` lists name suffixes of model tensors a checkpoint never has (e.g. buffers that
    only exist after fusing). A checkpoint classifier is dropped when the model has none.
    """
    unwrapped = unwrap_checkpoint(state_dict)
    source = {k: v for k, v in unwrapped.items() if not _is_counter(k, v)}
    model_state = model.state_dict()
    target = {k: v for k, v in model_state.items() if not _is_counter(k, v) and not k.endswith(tuple(skip_target))}
    # counters are kept where the names say whose they are
    counters = {k: unwrapped[k] for k, v in model_state.items() if _is_counter(k, v) and k in unwrapped}
    head = _head_prefix(model)
    if head is None:
        source = _without_classifier(source, model)
    if set(target) <= set(source):
        extra = sorted(set(source) - set(target))
        shapes = [
            f"{k}: {tuple(source[k].shape)} vs {tuple(target[k].shape)}"
            for k in target
            if source[k].shape != target[k].shape
        ]
        if extra or shapes:
            raise CheckpointMismatchError(_mismatch_message(label, model, extra, shapes))
        return {**{k: source[k] for k in target}, **counters}
    return _fit_by_structure(source, target, label, model)


def _is_counter(name: str, tensor: torch.Tensor) -> bool:
    # a foreign checkpoint names its counters its own way: a 0-d integer tensor is one whatever its name
    return name.endswith(IGNORED_SUFFIXES) or (tensor.dim() == 0 and not tensor.is_floating_point())


def _head_prefix(model: nn.Module) -> Optional[str]:
    """The classifier's module name when the model has a real classifier, else None."""
    name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if getattr(model, "num_classes", 1) == 0 or not name:
        return None
    return name


def _without_classifier(source: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Drop the checkpoint's classifier: by the model's classifier name, or its trailing (N, C) + (N,) pair."""
    name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if name and any(k.startswith(name + ".") for k in source):
        return {k: v for k, v in source.items() if not k.startswith(name + ".")}
    keys = list(source)
    features = getattr(model, "num_features", None)
    if len(keys) >= 2:
        w, b = source[keys[-2]], source[keys[-1]]
        if w.dim() == 2 and b.dim() == 1 and w.shape[0] == b.shape[0] and w.shape[1] == features:
            return {k: source[k] for k in keys[:-2]}
    return source


def _fit_by_structure(
    source: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor], label: str, model: nn.Module
) -> Dict[str, torch.Tensor]:
    """Pair tensors by order within each shape; all of them, each exactly once, or a clear error."""
    by_shape: Dict[Tuple[int, ...], List[str]] = defaultdict(list)
    for k, v in source.items():
        by_shape[tuple(v.shape)].append(k)
    out: Dict[str, torch.Tensor] = {}
    unplaced_target = []
    for k, v in target.items():
        queue = by_shape.get(tuple(v.shape))
        if queue:
            out[k] = source[queue.pop(0)]
        else:
            unplaced_target.append(f"{k} {tuple(v.shape)}")
    unplaced_source = [f"{k} {tuple(source[k].shape)}" for keys in by_shape.values() for k in keys]
    if unplaced_target or unplaced_source:
        raise CheckpointMismatchError(
            f"{label} does not fit {_model_label(model)}: its tensor names differ from the model's and its "
            f"structure does not match either ({len(source)} tensors in the checkpoint, {len(target)} in the model)\n"
            + _listing("missing (model tensors no checkpoint tensor fits)", unplaced_target)
            + _listing("unexpected (checkpoint tensors that could not be placed)", unplaced_source)
        )
    return out


def _model_label(model: nn.Module) -> str:
    return (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__


def _listing(label: str, items: List[str], show: int = 12) -> str:
    if not items:
        return ""
    more = f" ... (+{len(items) - show} more)" if len(items) > show else ""
    return f"  {len(items)} {label}: {', '.join(items[:show])}{more}\n"


def _mismatch_message(label: str, model: nn.Module, extra: List[str], shapes: List[str]) -> str:
    return (
        f"{label} does not fit {_model_label(model)}:\n"
        + _listing("unexpected tensors", extra)
        + _listing("shape mismatches", shapes)
    ).rstrip()
