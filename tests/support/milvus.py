"""What the server tests do when the embedded Milvus server is not there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import pytest

from support.data import make_tiny_layout


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def server_unavailable(reason: str) -> None:
    """Skip a server test, saying why; under CI, where the server paths must be tested, fail it instead."""
    if running_in_ci():
        pytest.fail(f"{reason} (CI is set: a server test may not be skipped here)", pytrace=False)
    pytest.skip(reason)


def six_image_database(base: Path, models: Sequence[str]) -> Tuple[str, Path]:
    """(uri, data root) of a Lite database in ``base`` holding, for each of ``models``, the six images of a
    ``make_tiny_layout`` folder with vectors that no model made (for paths that need no model), released after."""
    from milvus_lite.server_manager import server_manager_instance

    from benchmarks.synthetic import synthetic_meta
    from embed.common.identity import EmbeddingKey
    from indexer.milvus_store import VectorStore

    root = make_tiny_layout(base / "data")
    uri = str(base / "milvus.db")
    store = VectorStore(uri)
    for model in models:
        name = EmbeddingKey(model, root.name, "val").collection_name
        store.ensure_collection(name, synthetic_meta(model, 8, root.name, str(root), rows=6, complete=True))
        store.upsert(
            name,
            np.arange(6),
            np.eye(6, 8, dtype=np.float32),
            ["n01440764"] * 3 + ["n01443537"] * 3,
            [f"images/val_{i}.JPEG" for i in range(6)],
            progress=False,
        )
    store.close()
    server_manager_instance.release_all()
    return uri, root
