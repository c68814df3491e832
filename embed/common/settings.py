"""The one configuration object: every ``RETRIEVAL_*`` variable is read here, and only here.

``RetrievalSettings.from_environment()`` reads the environment when it is called, never at import, so a variable
set before a command runs is always seen. Each entry point reads it once and passes the object down (docs/decisions.md,
"where settings are loaded"): ``run_cli`` for ``python -m embed`` and ``python -m indexer`` (the parser's defaults
and ``args.settings``), ``AppSettings.from_argv`` for each app page run, each benchmark's ``main``. Library code
takes a ``RetrievalSettings`` as a parameter or a dataclass field. Four public boundaries that Python callers also
use without settings take ``settings: RetrievalSettings | None = None`` and fall back to the environment through
``given_or_current``: ``VectorStore``, ``load_model`` (weights), ``ensure_dataset`` (named datasets), and timm's
``create_model("gresnet50", pretrained=True)``, which passes nothing. Deliberately imports nothing heavy: ``--help``
and the app's start-up read these without torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, TypeVar

ENV_PREFIX = "RETRIEVAL_"
DATASET_URL_PREFIX = ENV_PREFIX + "DATASET_URL_"
DATASET_MD5_PREFIX = ENV_PREFIX + "DATASET_MD5_"
DATASETS_ENV = ENV_PREFIX + "DATASETS"  # the folders named datasets are looked for in (os.pathsep-separated)

Number = TypeVar("Number", int, float)


class SettingsError(ValueError):
    """A ``RETRIEVAL_*`` variable holds a value its setting cannot take."""


def _number(env: Dict[str, str], name: str, kind: Callable[[str], Number], minimum: Number, default: Number) -> Number:
    """``RETRIEVAL_<name>`` as a number of at least ``minimum``; ``default`` when unset or empty."""
    text = env.get(ENV_PREFIX + name)
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name}={text!r} is not a number") from None
    if not value >= minimum:  # NaN too
        raise SettingsError(f"{ENV_PREFIX}{name}={text!r}: needs at least {minimum}")
    return value


_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _flag(env: Dict[str, str], name: str, default: bool) -> bool:
    """``RETRIEVAL_<name>`` as 1/0, true/false, yes/no or on/off; ``default`` when unset or empty."""
    text = env.get(ENV_PREFIX + name)
    if not text:
        return default
    if text.strip().lower() not in _FLAGS:
        raise SettingsError(f"{ENV_PREFIX}{name}={text!r}: expected 1 or 0 (true/false, yes/no, on/off)")
    return _FLAGS[text.strip().lower()]


@dataclass(frozen=True)
class RetrievalSettings:
    """Defaults shared by the CLIs, the app, the downloads and the benchmarks (env variable in brackets)."""

    data_root_from_env: Optional[str] = None  # RETRIEVAL_DATA_ROOT as set (the app then uses the indexed root)
    data_root: str = "data/imagenet"  # RETRIEVAL_DATA_ROOT
    embeddings: str = "data/embeddings"  # RETRIEVAL_EMBEDDINGS
    milvus_uri: str = "data/milvus.db"  # RETRIEVAL_MILVUS_URI
    milvus_token: str = ""  # RETRIEVAL_MILVUS_TOKEN
    split: str = "val"  # RETRIEVAL_SPLIT
    extra_models: str = ""  # RETRIEVAL_EXTRA_MODELS (the app's extra columns)
    report_dir: str = "data/report"  # RETRIEVAL_REPORT_DIR (the Evaluation page)
    datasets_dirs: Tuple[str, ...] = ("data/datasets", "../shared/datasets")  # RETRIEVAL_DATASETS (os.pathsep)
    # RETRIEVAL_DATASET_URL_<NAME> / RETRIEVAL_DATASET_MD5_<NAME>: another address for a named dataset
    dataset_urls: Dict[str, str] = field(default_factory=dict)
    dataset_md5s: Dict[str, str] = field(default_factory=dict)
    cache_dir: Optional[str] = None  # RETRIEVAL_CACHE (default $XDG_CACHE_HOME/backbone-retrieval)
    xdg_cache_home: Optional[str] = None  # XDG_CACHE_HOME, where the default cache folder goes (else ~/.cache)
    gresnet_url: Optional[str] = None  # RETRIEVAL_GRESNET_URL (default: the blog's Drive file)
    lite_wait_s: float = 15.0  # RETRIEVAL_LITE_WAIT_S: wait for a starting Lite owner
    insert_batch_bytes: int = 32 * 1024 * 1024  # RETRIEVAL_INSERT_BATCH_BYTES: under every Milvus request limit
    lite_slow_rows_x_dim: Optional[int] = None  # RETRIEVAL_LITE_SLOW_ROWS_X_DIM: when build advises a server
    milvus_retries: int = 6  # RETRIEVAL_MILVUS_RETRIES: retries of a transient failure (backoff 1, 2, 4 ... 30 s)
    keep_freed_memory: bool = True  # RETRIEVAL_KEEP_FREED_MEMORY: 0 keeps glibc malloc defaults (host_memory.py)

    @classmethod
    def from_environment(cls, environ: Optional[Dict[str, str]] = None) -> "RetrievalSettings":
        env = dict(os.environ if environ is None else environ)
        get = env.get
        defaults = cls()
        datasets = get(DATASETS_ENV)
        return cls(
            data_root_from_env=get(ENV_PREFIX + "DATA_ROOT"),
            data_root=get(ENV_PREFIX + "DATA_ROOT") or defaults.data_root,
            embeddings=get(ENV_PREFIX + "EMBEDDINGS") or defaults.embeddings,
            milvus_uri=get(ENV_PREFIX + "MILVUS_URI") or defaults.milvus_uri,
            milvus_token=get(ENV_PREFIX + "MILVUS_TOKEN", defaults.milvus_token),
            split=get(ENV_PREFIX + "SPLIT") or defaults.split,
            extra_models=get(ENV_PREFIX + "EXTRA_MODELS", defaults.extra_models),
            report_dir=get(ENV_PREFIX + "REPORT_DIR") or defaults.report_dir,
            datasets_dirs=tuple(p for p in datasets.split(os.pathsep) if p) if datasets else defaults.datasets_dirs,
            dataset_urls={
                k[len(DATASET_URL_PREFIX) :]: v for k, v in env.items() if k.startswith(DATASET_URL_PREFIX) and v
            },
            dataset_md5s={
                k[len(DATASET_MD5_PREFIX) :]: v for k, v in env.items() if k.startswith(DATASET_MD5_PREFIX) and v
            },
            cache_dir=get(ENV_PREFIX + "CACHE") or None,
            xdg_cache_home=get("XDG_CACHE_HOME") or None,
            gresnet_url=get(ENV_PREFIX + "GRESNET_URL") or None,
            lite_wait_s=_number(env, "LITE_WAIT_S", float, 0.0, defaults.lite_wait_s),
            insert_batch_bytes=_number(env, "INSERT_BATCH_BYTES", int, 1, defaults.insert_batch_bytes),
            lite_slow_rows_x_dim=_number(env, "LITE_SLOW_ROWS_X_DIM", int, 1, 0) or None,  # 0: unset
            milvus_retries=_number(env, "MILVUS_RETRIES", int, 0, defaults.milvus_retries),
            keep_freed_memory=_flag(env, "KEEP_FREED_MEMORY", defaults.keep_freed_memory),
        )

    def weights_cache(self) -> Path:
        """Where downloaded weights live: RETRIEVAL_CACHE, else $XDG_CACHE_HOME or ~/.cache, /backbone-retrieval."""
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        base = self.xdg_cache_home or Path.home() / ".cache"
        return Path(base) / "backbone-retrieval"


DEFAULTS = RetrievalSettings()  # every setting unset: the defaults a dataclass field of another module starts from


def current() -> RetrievalSettings:
    """The settings as the environment says now: what an entry point reads, once."""
    return RetrievalSettings.from_environment()


def given_or_current(given: Optional[RetrievalSettings]) -> RetrievalSettings:
    """``given``, or the environment's settings where a caller of a public boundary passed none."""
    return given if given is not None else current()
