"""Model registry: short names -> timm architectures, feature dims, preprocessing and weights.

Weights are resolved in this order: ``--checkpoint PATH`` (torch or safetensors; raw or wrapped
under model / state_dict / model_ema; ``module.`` prefixes stripped) -> the weights a pip package
ships (effnet-lite0/1/2) -> a checkpoint downloaded once into the cache (GResNet: the author's
Google Drive file) -> timm's hub pretrained weights (needs internet once, then the local cache)
-> a clear error naming ``--checkpoint`` and ``--random-init``. Random weights only on request.
Checkpoint tensors are fitted by name, or by structure when a third party named them differently
(see checkpoint_mapping.py).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn

from embed.models import gresnet as _gresnet  # noqa: F401  (registers gresnet50 with timm)
from embed.models.checkpoint_mapping import fit_state_dict, unwrap_checkpoint
from embed.sources.download import DownloadError, file_digest
# the catalogue (names, dims, titles, weights sources) is torch-free; it is re-exported here for the loaders' users
from embed.models.catalog import (BLOG_MODELS, REGISTRY, ModelSpec, UnknownModel, WeightsDownload,  # noqa: F401
                                  WeightsUnavailable, get_spec, hub_reachable, weights_available, weights_obtainable)

log = logging.getLogger(__name__)

RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class WeightsInfo:
    source: str        # "checkpoint" | "package" | "download" | "hub" | "random"
    fingerprint: str   # "sha256:<hex>" of the file, "hub:<tag>", or "random"
    detail: str = ""   # path or hub id

    @property
    def is_random(self) -> bool:
        return self.source == "random"

    def describe(self) -> str:
        if self.is_random:
            return "RANDOM weights (--random-init): features are meaningless for retrieval"
        return f"{self.source}: {self.detail} ({self.fingerprint[:23]})"


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: nn.Module
    weights: WeightsInfo
    data_config: Dict
    transform: Callable
    fused: bool = False


def read_checkpoint(path: Path) -> Dict[str, torch.Tensor]:
    """A state dict from a .safetensors or torch file (timm's reader), unwrapped from training wrappers."""
    from timm.models import load_state_dict
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailable(f"checkpoint {path} does not exist")
    try:
        raw = load_state_dict(str(path), use_ema=True)
    except Exception as e:  # a pickle with foreign classes, a truncated file, or not a torch file at all
        raise WeightsUnavailable(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e)[:200]}") from None
    return unwrap_checkpoint(raw)


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
    if checkpoint is not None:
        model, weights = _from_file(spec, Path(checkpoint), "checkpoint", kwargs)
    elif spec.package_weights is not None and (pkg := spec.package_weights()) is not None:
        model, weights = _from_file(spec, pkg, "package", kwargs)
    elif spec.download is not None:
        model, weights = _downloaded_or_random(spec, random_init, kwargs)
    else:
        model, weights = _hub_or_random(spec, name, random_init, kwargs)
    model.eval()
    if spec.fuse:
        from timm.utils import reparameterize_model
        model = reparameterize_model(model)
    data_config = resolve_model_data_config(model)
    transform = create_transform(**data_config, is_training=False)
    if spec.dim < 0:
        # any timm model: its own modules say whether it is a convnet (a ViT has one conv, its patch embedding)
        convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
        spec = replace(spec, dim=int(model.num_features), channels_last=convs > 1)
    return LoadedModel(spec, model, weights, data_config, transform, spec.fuse)


def _from_file(spec: ModelSpec, path: Path, source: str, kwargs: Dict) -> Tuple[nn.Module, WeightsInfo]:
    """A model with the weights of a local file, fitted by name or structure and loaded strictly, once."""
    import timm
    state = read_checkpoint(path)
    model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
    model.load_state_dict(fit_state_dict(state, model, path.name, skip_target=("pad_value",)), strict=True)
    return model, WeightsInfo(source, "sha256:" + file_digest(path), str(path.resolve()))


def _downloaded_or_random(spec: ModelSpec, random_init: bool, kwargs: Dict) -> Tuple[nn.Module, WeightsInfo]:
    """Weights downloaded once into the cache (validated before they are kept); random only on request."""
    try:
        path = spec.download.cached() or spec.download.fetch()
    except DownloadError as e:
        if not random_init:
            raise WeightsUnavailable(f"{spec.name}: {e}\nOr use --random-init to run with random weights.") from None
        log.warning("%s; using RANDOM weights (--random-init)", e)
        return _random_model(spec, kwargs)
    return _from_file(spec, path, "download", kwargs)


def _hub_or_random(spec: ModelSpec, name: str, random_init: bool, kwargs: Dict):
    """Hub weights when there are any to get; random weights only when asked for with --random-init."""
    import timm
    problem = None
    if spec.hub:
        try:
            with _hub_access(spec):
                model = timm.create_model(spec.timm_name, pretrained=True, **kwargs)
            return model, WeightsInfo("hub", f"hub:{spec.timm_name}", spec.timm_name)
        except Exception as e:
            problem = (f"could not get pretrained weights for {name} ({spec.timm_name}) from the hub: "
                       f"{type(e).__name__}: {str(e)[:200]}")
    else:
        problem = f"{name} has no published hub weights: pass the author's checkpoint (see README, 'Weights')"
    if not random_init:
        raise WeightsUnavailable(f"{problem}\nPass a local file with --checkpoint PATH, or use --random-init to run "
                                 f"with random weights.")
    log.warning("%s; using RANDOM weights (--random-init)", problem)
    return _random_model(spec, kwargs)


def _random_model(spec: ModelSpec, kwargs: Dict) -> Tuple[nn.Module, WeightsInfo]:
    import timm
    # seeded, so that a resumed or repeated run embeds exactly as the first one did
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
    return model, WeightsInfo("random", f"random:seed{RANDOM_INIT_SEED}", f"random init, seed {RANDOM_INIT_SEED}")


@contextlib.contextmanager
def _hub_access(spec: ModelSpec):
    """Go offline at once when the hub cannot be reached: the local cache, or a fast clear error.

    Without this, huggingface_hub retries for about 45 s before giving up on a machine with no network.
    """
    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE or hub_reachable():
        yield
        return
    cached, _ = weights_available(spec.name)
    if not cached:
        raise WeightsUnavailable(f"the Hugging Face hub ({constants.ENDPOINT}) is unreachable and "
                                 f"{spec.timm_name} is not in the local cache")
    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous
