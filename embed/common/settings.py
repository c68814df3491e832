"""Defaults every entry point shares (CLI, app, benchmarks), read from the environment in one place.

Deliberately imports nothing heavy: ``--help`` and the app's start-up read these without torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Defaults:
    data_root_from_env: Optional[str]   # RETRIEVAL_DATA_ROOT as set (the app then uses the indexed data root)
    data_root: str
    embeddings: str
    milvus_uri: str
    milvus_token: str
    split: str
    extra_models: str


def from_environment() -> Defaults:
    """The defaults as the environment says now (the app reads them per session, not at import)."""
    env = os.environ.get
    return Defaults(
        data_root_from_env=env("RETRIEVAL_DATA_ROOT"),
        data_root=env("RETRIEVAL_DATA_ROOT") or "data/imagenet",
        embeddings=env("RETRIEVAL_EMBEDDINGS", "data/embeddings"),
        milvus_uri=env("RETRIEVAL_MILVUS_URI", "data/milvus.db"),
        milvus_token=env("RETRIEVAL_MILVUS_TOKEN", ""),
        split=env("RETRIEVAL_SPLIT", "val"),
        extra_models=env("RETRIEVAL_EXTRA_MODELS", ""),
    )


_AT_START = from_environment()
DEFAULT_DATA_ROOT = _AT_START.data_root
DEFAULT_EMBEDDINGS = _AT_START.embeddings
DEFAULT_MILVUS_URI = _AT_START.milvus_uri
DEFAULT_MILVUS_TOKEN = _AT_START.milvus_token
DEFAULT_SPLIT = _AT_START.split
DEFAULT_EXTRA_MODELS = _AT_START.extra_models
