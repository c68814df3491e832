"""Benchmarks: python -m benchmarks.run

Deliberately light (benchmarks.help_startup times commands that must not import torch): what the benchmark scripts
share about where results go and which machine made them.
"""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
