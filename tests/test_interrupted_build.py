"""Ctrl-C during a build (issue 39, item 5): no traceback, and a rerun re-embeds at most the batch in flight."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest
from support.builds import MODEL, extract_config
from support.cli import repo_env as env
from support.data import make_tiny_layout

from embed.extraction import extract as extract_module
from embed.extraction.extract import extract
from embed.extraction.shards import EmbeddingStore


def _cfg(root, out, **kw):
    """One shard of 1,024 images holds every image here: the batches, not the shards, are what a rerun keeps."""
    return extract_config(root, out, **{"shard_size": 1024, **kw})


def test_an_interrupted_extraction_keeps_every_finished_batch(tmp_path, monkeypatch):
    """Interrupted after 3 batches of 4 inside one 1,024-image shard: the rerun embeds only the 18 others, and
    the vectors are those of an uninterrupted run."""
    root = make_tiny_layout(tmp_path / "tiny", n_per_class=15)  # 30 images: one shard
    whole = extract(_cfg(root, tmp_path / "whole"))
    _, reference, _ = EmbeddingStore(whole.folder).load()

    real_embed = extract_module._embed

    def interrupted(cfg, embedder, reader, writers, wanted, positions, rank):
        (writer,) = writers  # one pooling: one shard set
        add, calls = writer.add, []

        def add_then_interrupt(*a):
            add(*a)
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt

        writer.add = add_then_interrupt
        return real_embed(cfg, embedder, reader, writers, wanted, positions, rank)

    monkeypatch.setattr(extract_module, "_embed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(_cfg(root, tmp_path / "b"))
    monkeypatch.setattr(extract_module, "_embed", real_embed)
    resumed = extract(_cfg(root, tmp_path / "b"))
    assert resumed.n_computed == 30 - 3 * 4, "only the batches not finished before the interrupt"
    positions, vectors, _ = EmbeddingStore(resumed.folder).load()
    assert positions.tolist() == list(range(30))
    np.testing.assert_allclose(vectors, reference, rtol=1e-5, atol=1e-6)


def test_embeddings_are_written_with_the_umask_mode_not_0600(tmp_path):
    root = make_tiny_layout(tmp_path / "tiny")
    old = os.umask(0o022)
    try:
        result = extract(_cfg(root, tmp_path / "emb"))
    finally:
        os.umask(old)
    files = sorted(result.folder.iterdir())
    assert [f.name for f in files] == ["manifest.json", "shard-00000.npz"]
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o644}


def _progress(text: str) -> int:
    counts = re.findall(r"\| (\d+)/\d+ \[", text)
    return int(counts[-1]) if counts else 0


@pytest.mark.slow
def test_ctrl_c_during_a_build_prints_no_traceback_and_the_rerun_resumes_per_batch(tmp_path):
    """A real Ctrl-C (SIGINT to the whole process group, decoding workers included) in the middle of the first
    1,024-image shard."""
    root = make_tiny_layout(tmp_path / "tiny", n_per_class=60)  # 120 images
    command = [
        sys.executable,
        *("-m", "indexer", "build", "--model", MODEL, "--random-init", "--split", "val"),
        *("--data-root", str(root), "--out", str(tmp_path / "emb"), "--uri", str(tmp_path / "m.db")),
        *("--batch-size", "8", "--workers", "2", "--decode", "workers"),
    ]
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env(PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stderr is not None
    seen = ""
    while _progress(seen[-300:]) < 24:
        ch = proc.stderr.read(1)
        assert ch, f"the build ended before 24 images:\n{seen[-3000:]}"
        seen += ch
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    rest, tail = proc.communicate(timeout=120)
    seen += tail
    assert proc.returncode == 130, seen[-3000:]
    assert "Traceback" not in seen and "resource_sharer" not in seen, seen[-3000:]
    assert "interrupted: what was finished is kept" in seen
    done = _progress(seen)
    rerun = subprocess.run(
        command + ["--no-progress"], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    [computed] = [int(n) for n in re.findall(r"extracting (\d+) images", rerun.stderr)]
    assert computed <= 120 - done, (computed, done)
    assert '"rows": 120' in rerun.stdout
