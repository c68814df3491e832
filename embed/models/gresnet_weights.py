"""The blog author's GResNet-50 checkpoint, downloaded once into the cache folder.

The post (https://frankzliu.com/blog/vision-transformers-are-overrated) links a Google Drive file
(its id is defined once, in ``embed.models.gresnet``, whose ``default_cfgs`` names it as the weights' source);
``gdown`` gets past Drive's confirmation page. ``RETRIEVAL_GRESNET_URL`` replaces that address with
any http(s) URL of a checkpoint file (a mirror, or a local server in tests). A file is kept only if
it is not a web page, loads as a torch or safetensors checkpoint and fits the model; otherwise
nothing stays in the cache and the error names the manual route, ``--checkpoint PATH``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from embed.common.settings import RetrievalSettings
from embed.models.checkpoint_mapping import CheckpointMismatchError
from embed.sources.download import DownloadError, download, looks_like_html

log = logging.getLogger(__name__)

# the author's checkpoint, linked from the blog post; gresnet.py's default_cfgs names it from here
BLOG_WEIGHTS_DRIVE_ID = "1WKPkLybhrE389sierVj2-uZ_ZYAJI1Gf"
BLOG_WEIGHTS_URL = f"https://drive.google.com/uc?id={BLOG_WEIGHTS_DRIVE_ID}"


URL_ENV = "RETRIEVAL_GRESNET_URL"
ARCHITECTURE = "gresnet50"
MANUAL_ROUTE = (
    f"download it yourself from {BLOG_WEIGHTS_URL} (linked from the blog post) and pass "
    f"--checkpoint PATH, or set {URL_ENV} to a reachable copy"
)


def source_url(config: RetrievalSettings) -> str:
    return config.gresnet_url or BLOG_WEIGHTS_URL


def cache_path(config: RetrievalSettings, url: Optional[str] = None) -> Path:
    """The cache file for ``url``: another address gets another file, so a mirror never stands in for Drive."""
    url = url or source_url(config)
    suffix = ".safetensors" if urlparse(url).path.endswith(".safetensors") else ".pth"
    if url == BLOG_WEIGHTS_URL:
        return config.weights_cache() / f"{ARCHITECTURE}_blog{suffix}"
    tag = hashlib.sha256(url.encode()).hexdigest()[:12]
    return config.weights_cache() / f"{ARCHITECTURE}_{tag}{suffix}"


def cached_checkpoint(config: RetrievalSettings) -> Optional[Path]:
    path = cache_path(config)
    return path if path.is_file() else None


def validate_checkpoint(path: Path) -> None:
    """Raise DownloadError unless ``path`` is a checkpoint that fits GResNet-50 (read and fitted as every file is)."""
    from embed.models.catalog import REGISTRY
    from embed.models.weights import WeightsUnavailable, load_file

    if looks_like_html(path):
        raise DownloadError(
            "the server sent a web page instead of the checkpoint (Google Drive's quota, virus-scan or sign-in page)"
        )
    try:
        load_file(REGISTRY["gresnet"], path)
    except WeightsUnavailable as e:  # truncated zip, not a torch file, foreign pickle classes
        raise DownloadError(
            f"the downloaded file is not a readable checkpoint ({str(e)[:200]}); truncated or damaged"
        ) from None
    except CheckpointMismatchError as e:
        raise DownloadError(str(e)) from None


def download_checkpoint(config: RetrievalSettings, progress: bool = True) -> Path:
    """The cached checkpoint, downloading and validating it first if needed."""
    url = source_url(config)
    dest = cache_path(config, url)
    if dest.is_file():
        return dest
    fetch = None if url != BLOG_WEIGHTS_URL else _gdown_fetch(progress)
    try:
        return download(
            url, dest, desc="GResNet-50 weights", validate=validate_checkpoint, fetch=fetch, progress=progress
        )
    except DownloadError as e:
        raise DownloadError(f"could not get the GResNet checkpoint from {url}: {e}\n{MANUAL_ROUTE}") from None


def _gdown_fetch(progress: bool):
    def fetch(out: Path) -> None:
        import gdown

        # a file object, not a path: gdown then keeps no partial file of its own in the cache
        try:
            with open(out, "wb") as fh:
                gdown.download(id=BLOG_WEIGHTS_DRIVE_ID, output=fh, quiet=not progress)
        except Exception as e:  # gdown's own errors, requests' connection errors
            raise DownloadError(f"{type(e).__name__}: {str(e)[:300]}") from None

    return fetch
