import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.builds import MODEL, extract_config
from support.cli import repo_env
from support.data import make_tiny_layout

from embed.extraction.embedder import build_embedder
from embed.extraction.extract import extract
from embed.extraction.shards import EmbeddingStore, StoreMismatch


def test_bad_files_are_skipped_counted_and_listed(imagefolder, tmp_path):
    result = extract(extract_config(imagefolder, tmp_path / "emb"))
    assert result.n_images == 16 and result.n_embedded == 12
    reasons = dict(result.skipped)
    assert set(reasons) == {f"n01443537/{n}" for n in ("empty.jpg", "text.jpg", "truncated.jpg", "bomb.png")}
    assert "empty" in reasons["n01443537/empty.jpg"]
    positions, vectors, skipped = EmbeddingStore(result.folder).load()
    assert vectors.shape == (12, result.n_embedded and vectors.shape[1]) and vectors.dtype == np.float32
    assert len(set(positions.tolist())) == 12 and len(skipped) == 4
    manifest = EmbeddingStore(result.folder).read_manifest()
    assert manifest.identity.weights_source == "random"


def test_all_image_modes_are_embedded(tmp_path):
    from support.data import good_images, write_files

    root = tmp_path / "modes"
    write_files(root / "val" / "any", good_images())
    result = extract(extract_config(root, tmp_path / "emb"))
    assert result.n_embedded == len(good_images()) and not result.skipped


def test_resume_after_interruption_gives_identical_vectors(tmp_path):
    root = make_tiny_layout(tmp_path / "tiny", n_per_class=7)  # 14 images, shards of 5 -> 3 shards
    full = extract(extract_config(root, tmp_path / "a"))
    _, ref, _ = EmbeddingStore(full.folder).load()

    # interrupted run: only the first shard made it to disk
    first = extract(extract_config(root, tmp_path / "b", limit=5))
    assert first.n_computed == 5
    resumed = extract(extract_config(root, tmp_path / "b"))
    assert resumed.n_computed == 9, "the resumed run computes only the missing shards"
    positions, vectors, _ = EmbeddingStore(resumed.folder).load()
    assert positions.tolist() == list(range(14))
    np.testing.assert_array_equal(vectors, ref)

    again = extract(extract_config(root, tmp_path / "b"))
    assert again.n_computed == 0 and again.n_embedded == 14

    forced = extract(extract_config(root, tmp_path / "b", force=True))
    assert forced.n_computed == 14


def test_partial_tmp_files_do_not_count_as_shards(tmp_path):
    root = make_tiny_layout(tmp_path / "tiny", n_per_class=5)
    result = extract(extract_config(root, tmp_path / "emb"))
    shard = EmbeddingStore(result.folder).shard_path(1)
    shard.write_bytes(shard.read_bytes()[:100])  # a torn write from a crash
    again = extract(extract_config(root, tmp_path / "emb"))
    assert again.n_computed == 5 and again.n_embedded == 10


def test_other_weights_refuse_to_mix(tmp_path):
    root = make_tiny_layout(tmp_path / "tiny")
    extract(extract_config(root, tmp_path / "emb"))
    emb = build_embedder(MODEL, random_init=True)
    emb.loaded.weights = type(emb.loaded.weights)("checkpoint", "sha256:other", "x")
    with pytest.raises(StoreMismatch, match="--force"):
        extract(extract_config(root, tmp_path / "emb"), embedder=emb)


def test_cli_extract_and_models(tmp_path):
    root = make_tiny_layout(tmp_path / "tiny")
    env = repo_env()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "embed",
            "extract",
            "--model",
            MODEL,
            "--split",
            "val",
            "--data-root",
            str(root),
            "--out",
            str(tmp_path / "emb"),
            "--random-init",
            "--workers",
            "1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["embedded"] == 6 and summary["skipped"] == 0
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "embed",
            "extract",
            "--model",
            "gresnet",
            "--split",
            "val",
            "--data-root",
            str(root),
            "--out",
            str(tmp_path / "emb"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "--checkpoint" in bad.stderr and "Traceback" not in bad.stderr
    models = subprocess.run(
        [sys.executable, "-m", "embed", "models", "--json"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    rows = {r["name"]: r for r in json.loads(models.stdout)}
    assert rows["gresnet"]["dim"] == 2048 and rows["vit"]["dim"] == 384


def test_torchrun_two_ranks_split_the_shards(tmp_path):
    root = make_tiny_layout(tmp_path / "tiny", n_per_class=7)
    # fp32: bf16 sums depend on the thread count, which differs between the runs compared here
    single = extract(extract_config(root, tmp_path / "single", precision="fp32"))
    _, ref, _ = EmbeddingStore(single.folder).load()
    env = repo_env(OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "embed",
        "extract",
        "--model",
        MODEL,
        "--split",
        "val",
        "--data-root",
        str(root),
        "--out",
        str(tmp_path / "dist"),
        "--random-init",
        "--workers",
        "0",
        "--shard-size",
        "5",
        "--batch-size",
        "4",
        "--no-progress",
        "--precision",
        "fp32",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    store = EmbeddingStore(Path(single.folder.as_posix().replace("/single/", "/dist/")))
    positions, vectors, _ = store.load()
    assert positions.tolist() == list(range(14))
    np.testing.assert_allclose(vectors, ref, rtol=1e-5, atol=1e-5)


def test_resume_after_a_limit_that_leaves_a_partial_shard(tmp_path):
    """--limit 7 with shards of 5 leaves shard 1 holding [5, 7) only: larger runs must complete it."""
    root = make_tiny_layout(tmp_path / "tiny", n_per_class=7)  # 14 images -> shards [0,5) [5,10) [10,14)
    fresh = extract(extract_config(root, tmp_path / "fresh"))
    _, ref, _ = EmbeddingStore(fresh.folder).load()

    first = extract(extract_config(root, tmp_path / "b", limit=7))
    assert first.n_computed == 7 and first.n_embedded == 7
    # --limit 12 extends shard 1 with [7, 10) (3) and adds [10, 12) (2); the full run then extends shard 2 with [12, 14)
    for limit, computed in ((12, 5), (None, 2)):
        run = extract(extract_config(root, tmp_path / "b", limit=limit))
        n = limit or 14
        positions, vectors, _ = EmbeddingStore(run.folder).load(n)
        assert positions.tolist() == list(range(n)), f"--limit {limit}: positions missing after resume"
        np.testing.assert_array_equal(vectors, ref[:n])
        assert run.n_embedded == n and run.n_computed == computed
