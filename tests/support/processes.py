"""Real processes for the reliability suite: run the CLIs, watch their logs, kill them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

from support.builds import MODEL
from support.cli import repo_env


def env(**extra) -> dict:
    return repo_env(**{"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra})


def build_cmd(root: Path, out: Path, uri: str, model: str = MODEL, *extra: str) -> List[str]:
    return [
        sys.executable,
        "-m",
        "indexer",
        "-v",
        "build",
        "--model",
        model,
        "--split",
        "val",
        "--data-root",
        str(root),
        "--out",
        str(out),
        "--uri",
        uri,
        "--random-init",
        "--workers",
        "0",
        "--batch-size",
        "4",
        "--shard-size",
        "8",
        "--no-progress",
        *extra,
    ]


def run(cmd: List[str], timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=kw.pop("env", env()), timeout=timeout, **kw)


def kill_when(
    cmd: List[str], marker: str, occurrence: int, cwd: Path, timeout: float = 300, env_vars: Optional[dict] = None
) -> str:
    """Start ``cmd``, SIGKILL it right after the ``occurrence``-th log line containing ``marker``."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env(**(env_vars or {}))
    )
    seen, lines = 0, []
    deadline = time.time() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                seen += 1
                if seen >= occurrence:
                    proc.send_signal(signal.SIGKILL)
                    break
            if time.time() > deadline:
                raise TimeoutError(f"{marker!r} not seen {occurrence} times in {timeout}s:\n{''.join(lines[-20:])}")
        else:
            raise AssertionError(f"process ended before {marker!r} #{occurrence}:\n{''.join(lines[-20:])}")
    finally:
        proc.kill()
        proc.wait()
    return "".join(lines)


@contextmanager
def lite_database_held_open(uri: str) -> Iterator[subprocess.Popen]:
    """Another process holding the Milvus Lite file ``uri`` open (as a second tool would), for as long as the block
    runs; it has opened the file when the block starts."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from pymilvus import MilvusClient; c = MilvusClient({uri!r}); "
            f"print('open', flush=True); import time; time.sleep(3600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=repo_env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        yield holder
    finally:
        holder.kill()
        holder.wait()
