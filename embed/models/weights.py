"""Where a model's weights come from: one ordered list of sources, asked the same three questions.

Order: ``--checkpoint PATH`` -> the weights a pip package ships (effnet-lite0/1/2) -> a checkpoint
downloaded once into the cache (GResNet: the author's Google Drive file) -> timm's Hugging Face hub
(downloaded once, then cached) -> random weights, only with ``--random-init``. Each source says whether
its weights are here now (no network), whether they can be got now (network), and loads them.
``embed models``, ``build --model all`` and ``load_model`` all walk this one list.

Every local file, whatever the source, is read and fitted by ``load_file``: the model's own
``checkpoint_filter_fn`` where it has one (GResNet), else ``fit_state_dict`` (by name, or by structure
for third-party names), then loaded strictly.
"""

from __future__ import annotations

import importlib
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlparse

from embed.common.settings import RetrievalSettings
from embed.models.catalog import ModelSpec, get_spec
from embed.sources.download import DownloadError, file_digest

if TYPE_CHECKING:
    import torch.nn as nn

log = logging.getLogger(__name__)

RANDOM_INIT_SEED = 0
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


class WeightsUnavailable(RuntimeError):
    """No weights could be found for a model; the message lists the ways to provide them."""


@dataclass(frozen=True)
class WeightsInfo:
    source: str  # "checkpoint" | "package" | "download" | "hub" | "random"
    fingerprint: str  # "sha256:<hex>" of the file, "hub:<tag>", or "random:seed0"
    detail: str = ""  # path or hub id

    @property
    def is_random(self) -> bool:
        return self.source == "random"

    def describe(self) -> str:
        if self.is_random:
            return "RANDOM weights (--random-init): features are meaningless for retrieval"
        return f"{self.source}: {self.detail} ({self.fingerprint[:23]})"


@dataclass(frozen=True)
class Availability:
    here: bool  # loadable now without the network
    obtainable: bool  # here, or can be downloaded now
    where: str  # where they are, or why not and how to get them


def read_checkpoint(path: Path) -> Dict[str, Any]:
    """A state dict from a .safetensors or torch file (timm's reader), unwrapped from training wrappers."""
    from timm.models import load_state_dict

    from embed.models.checkpoint_mapping import unwrap_checkpoint

    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailable(f"checkpoint {path} does not exist")
    try:
        raw = load_state_dict(str(path), use_ema=True)
    except Exception as e:  # a pickle with foreign classes, a truncated file, or not a torch file at all
        raise WeightsUnavailable(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e)[:200]}") from None
    return unwrap_checkpoint(raw)


def checkpoint_filter(spec: ModelSpec) -> Callable[[Dict[str, Any], "nn.Module"], Dict[str, Any]]:
    """The model's own ``checkpoint_filter_fn`` (as timm's model files have), else the generic fit."""
    if spec.checkpoint_filter:
        module, _, name = spec.checkpoint_filter.partition(":")
        return getattr(importlib.import_module(module), name)
    from embed.models.checkpoint_mapping import fit_state_dict

    return lambda state, model: fit_state_dict(state, model, spec.name)


def load_file(spec: ModelSpec, path: Path, **create_kwargs: Any) -> "nn.Module":
    """A model with the weights of a local file, fitted and loaded strictly: the one path for every file."""
    import timm

    state = read_checkpoint(path)
    model = timm.create_model(spec.timm_name, pretrained=False, **create_kwargs)
    model.load_state_dict(checkpoint_filter(spec)(state, model), strict=True)
    return model


def file_info(source: str, path: Path) -> WeightsInfo:
    return WeightsInfo(source, "sha256:" + file_digest(path), str(Path(path).resolve()))


def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of ``url`` answers a TCP connect (DNS included) within ``timeout``."""
    parts = urlparse(url)
    try:
        with socket.create_connection(
            (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), timeout=timeout
        ):
            return True
    except (OSError, TypeError):
        return False


class WeightsSource:
    """One place weights can come from."""

    name = ""

    def applies(self, spec: ModelSpec) -> bool:
        raise NotImplementedError

    def availability(self, spec: ModelSpec, config: RetrievalSettings) -> Availability:
        raise NotImplementedError

    def load(
        self, spec: ModelSpec, create_kwargs: Dict[str, Any], config: RetrievalSettings
    ) -> Tuple["nn.Module", WeightsInfo]:
        raise NotImplementedError


class PackageWeights(WeightsSource):
    """A file a pip package ships (no network ever)."""

    name = "package"

    def applies(self, spec: ModelSpec) -> bool:
        return spec.package_weights is not None and spec.package_weights() is not None

    def availability(self, spec: ModelSpec, config: RetrievalSettings) -> Availability:
        return Availability(True, True, "pip package")

    def load(self, spec, create_kwargs, config):
        path = spec.package_weights()
        return load_file(spec, path, **create_kwargs), file_info("package", path)


class DownloadedWeights(WeightsSource):
    """A checkpoint downloaded once into the cache, validated before it is kept."""

    name = "download"

    def applies(self, spec: ModelSpec) -> bool:
        return spec.download is not None

    def availability(self, spec: ModelSpec, config: RetrievalSettings) -> Availability:
        assert spec.download is not None
        cached, source = spec.download.cached(config), spec.download.source(config)
        if cached is not None:
            return Availability(True, True, f"download cache ({cached})")
        if host_reachable(source):
            return Availability(False, True, f"downloads on first use ({source})")
        return Availability(
            False,
            False,
            f"no weights here and {source} is unreachable: connect to "
            f"the internet once (the file is then cached), {manual_route(spec)}",
        )

    def load(self, spec, create_kwargs, config):
        assert spec.download is not None
        try:
            path = spec.download.cached(config) or spec.download.fetch(config)
        except DownloadError as e:
            raise WeightsUnavailable(f"{spec.name}: {e}") from None
        return load_file(spec, path, **create_kwargs), file_info("download", path)


class HubWeights(WeightsSource):
    """timm's pretrained weights on the Hugging Face hub, cached by huggingface_hub after the first download.

    When the hub cannot be reached, a cached file is loaded as a local file (no process-wide offline switch,
    no 45 s of retries); when it can, timm downloads as usual.
    """

    name = "hub"

    def applies(self, spec: ModelSpec) -> bool:
        return spec.hub

    @staticmethod
    def hub_id(spec: ModelSpec) -> Optional[str]:
        if spec.hub_id is not None:
            return spec.hub_id  # catalogue entries name it: no torch to answer "is it here?"
        import timm  # a timm:<name> model: only timm's pretrained config knows its repository

        cfg = timm.models.get_pretrained_cfg(spec.timm_name)
        return getattr(cfg, "hf_hub_id", None) if cfg else None

    def cached_file(self, spec: ModelSpec) -> Optional[Path]:
        from huggingface_hub import try_to_load_from_cache

        hub_id = self.hub_id(spec)
        for fname in HUB_FILES:
            found = try_to_load_from_cache(hub_id, fname) if hub_id else None
            if isinstance(found, str):
                return Path(found)
        return None

    @staticmethod
    def reachable() -> bool:
        from huggingface_hub import constants

        return not constants.HF_HUB_OFFLINE and host_reachable(constants.ENDPOINT)

    def availability(self, spec: ModelSpec, config: RetrievalSettings) -> Availability:
        from huggingface_hub import constants

        hub_id = self.hub_id(spec) or spec.timm_name
        if self.cached_file(spec) is not None:
            return Availability(True, True, f"hub cache ({hub_id})")
        if self.reachable():
            return Availability(False, True, f"hub download on first use ({hub_id})")
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        return Availability(
            False,
            False,
            f"not in the local hub cache and the hub ({constants.ENDPOINT}) is "
            f"unreachable{offline}: connect to the internet once (timm caches the "
            f"weights), {manual_route(spec)}",
        )

    def load(self, spec, create_kwargs, config):
        import timm

        info = WeightsInfo("hub", f"hub:{spec.timm_name}", spec.timm_name)
        if not self.reachable():
            cached = self.cached_file(spec)
            if cached is None:
                raise WeightsUnavailable(self.availability(spec, config).where)
            overlay = {"file": str(cached)}
            return timm.create_model(
                spec.timm_name, pretrained=True, pretrained_cfg_overlay=overlay, **create_kwargs
            ), info
        try:
            return timm.create_model(spec.timm_name, pretrained=True, **create_kwargs), info
        except Exception as e:
            raise WeightsUnavailable(
                f"could not get pretrained weights for {spec.name} ({spec.timm_name}) from the "
                f"hub: {type(e).__name__}: {str(e)[:200]}"
            ) from None


class RandomWeights(WeightsSource):
    """Seeded random weights, only on request: a resumed or repeated run embeds exactly as the first."""

    name = "random"

    def applies(self, spec: ModelSpec) -> bool:
        return True

    def availability(self, spec: ModelSpec, config: RetrievalSettings) -> Availability:
        return Availability(True, True, f"random init, seed {RANDOM_INIT_SEED}")

    def load(self, spec, create_kwargs, config):
        import timm
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = timm.create_model(spec.timm_name, pretrained=False, **create_kwargs)
        return model, WeightsInfo("random", f"random:seed{RANDOM_INIT_SEED}", f"random init, seed {RANDOM_INIT_SEED}")


REAL_SOURCES: List[WeightsSource] = [PackageWeights(), DownloadedWeights(), HubWeights()]


def manual_route(spec: ModelSpec) -> str:
    return f"or pass --checkpoint PATH with --model {spec.name}"


def sources_for(spec: ModelSpec) -> List[WeightsSource]:
    """The real sources that apply to ``spec``, in resolution order."""
    return [s for s in REAL_SOURCES if s.applies(spec)]


def availability(spec: ModelSpec, config: RetrievalSettings) -> Availability:
    """The first applicable source's answer: are real weights here, or obtainable now, and where."""
    for source in sources_for(spec):
        return source.availability(spec, config)
    return Availability(False, False, f"no published weights: {manual_route(spec)}")


def resolve(
    spec: ModelSpec,
    checkpoint: Optional[Path],
    random_init: bool,
    create_kwargs: Dict[str, Any],
    config: RetrievalSettings,
) -> Tuple["nn.Module", WeightsInfo]:
    """Load ``spec`` with the first source that has weights; random ones only when ``random_init`` allows."""
    if checkpoint is not None:
        return load_file(spec, Path(checkpoint), **create_kwargs), file_info("checkpoint", Path(checkpoint))
    problems = []
    for source in sources_for(spec):
        try:
            return source.load(spec, create_kwargs, config)
        except WeightsUnavailable as e:
            problems.append(str(e))
    problem = (
        "; ".join(problems)
        or f"{spec.name} has no published weights: pass the author's checkpoint (see README, 'Weights')"
    )
    if not random_init:
        raise WeightsUnavailable(
            f"{problem}\nPass a local file with --checkpoint PATH, or use --random-init to run with random weights."
        )
    log.warning("%s; using RANDOM weights (--random-init)", problem)
    return RandomWeights().load(spec, create_kwargs, config)


def weights_available(name: str, config: RetrievalSettings) -> Tuple[bool, str]:
    """Whether ``load_model(name)`` would find real weights here without the network, and where."""
    found = availability(get_spec(name), config)
    return found.here, found.where


def weights_obtainable(name: str, config: RetrievalSettings) -> Tuple[bool, str]:
    """Whether real weights for ``name`` are here or can be downloaded now; if not, why and how to get them."""
    found = availability(get_spec(name), config)
    return found.obtainable, found.where
