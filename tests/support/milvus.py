"""What the server tests do when the embedded Milvus server is not there."""

from __future__ import annotations

import os

import pytest


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def server_unavailable(reason: str) -> None:
    """Skip a server test, saying why; under CI, where the server paths must be tested, fail it instead."""
    if running_in_ci():
        pytest.fail(f"{reason} (CI is set: a server test may not be skipped here)", pytrace=False)
    pytest.skip(reason)
