"""Defaults every entry point shares (CLI, app, benchmarks), read once from the environment.

Deliberately imports nothing heavy: ``--help`` and the app's start-up read these without torch.
"""
from __future__ import annotations

import os

# the app treats "not set" differently from the CLI's default (it then uses the indexed data root)
DATA_ROOT_FROM_ENV = os.environ.get("RETRIEVAL_DATA_ROOT")
DEFAULT_DATA_ROOT = DATA_ROOT_FROM_ENV or "data/imagenet"
DEFAULT_EMBEDDINGS = os.environ.get("RETRIEVAL_EMBEDDINGS", "data/embeddings")
DEFAULT_MILVUS_URI = os.environ.get("RETRIEVAL_MILVUS_URI", "data/milvus.db")
DEFAULT_MILVUS_TOKEN = os.environ.get("RETRIEVAL_MILVUS_TOKEN", "")
DEFAULT_SPLIT = os.environ.get("RETRIEVAL_SPLIT", "val")
DEFAULT_EXTRA_MODELS = os.environ.get("RETRIEVAL_EXTRA_MODELS", "")
