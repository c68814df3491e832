"""Benchmarks: python -m benchmarks.run

Deliberately light (benchmarks.help_startup times commands that must not import torch): what the benchmark scripts
share about where results go and which machine made them.
"""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embed.common.settings import RetrievalSettings

REPO = Path(__file__).resolve().parents[1]


def benchmark_settings() -> "RetrievalSettings":
    """The RETRIEVAL_* settings, read once by a benchmark's ``main`` and passed down from there (as ``run_cli`` does
    for the CLIs), the process's host memory set as they say."""
    from embed.common.settings import current
    from embed.extraction import host_memory

    config = current()
    host_memory.apply_settings(config)
    return config


def cpu_result_path(stem: str, suffix: str = "") -> Path:
    """The default JSON of a CPU benchmark run today: benchmarks/results/cpu-2core/<stem>-<date><suffix>.json."""
    return REPO / "benchmarks" / "results" / "cpu-2core" / f"{stem}-{dt.date.today().isoformat()}{suffix}.json"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform.processor()`` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
