"""Crashes and environment faults lose nothing: SIGKILL, a Milvus server going away, full or read-only disks."""

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from support.data import make_tiny_layout
from support.processes import MODEL, build_cmd, env, kill_when, run

from embed.common.identity import EmbeddingKey
from indexer.milvus_store import VectorStore

# real CLI processes killed and restarted
pytestmark = pytest.mark.slow

N = 40  # 2 classes x 20 images: 5 shards of 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_tiny_layout(tmp_path_factory.mktemp("faults") / "ds", n_per_class=20)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """An uninterrupted build: the vectors every recovered build must reproduce."""
    base = tmp_path_factory.mktemp("reference")
    res = run(build_cmd(dataset, base / "emb", str(base / "ref.db")))
    assert res.returncode == 0, res.stderr
    store = VectorStore(str(base / "ref.db"))
    ids, vectors, _, _ = store.read_all(EmbeddingKey(MODEL, dataset.name, "val").collection_name)
    store.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()
    return ids, vectors


def _check_exact(uri: str, dataset: Path, reference) -> None:
    store = VectorStore(uri)
    name = EmbeddingKey(MODEL, dataset.name, "val").collection_name
    assert store.count(name) == N
    ids, vectors, _, _ = store.read_all(name)
    assert ids.tolist() == list(range(N)), "no duplicates, nothing missing"
    np.testing.assert_array_equal(vectors, reference[1])
    assert store.meta(name).complete
    store.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()


@pytest.mark.parametrize(
    "marker,occurrence",
    [
        ("wrote shard", 1),  # during extraction, after the first shard
        ("wrote shard", 3),  # during extraction, mid-way
        ("upserted rows", 1),  # during insertion, after the first batch
        ("upserted rows", 3),  # during insertion, mid-way
    ],
)
def test_sigkill_then_rerun_is_exact(dataset, reference, tmp_path, marker, occurrence):
    uri = str(tmp_path / "k.db")
    cmd = build_cmd(dataset, tmp_path / "emb", uri)
    # small insert batches (about 5 rows) so that a kill can land between them
    kill_when(cmd, marker, occurrence, tmp_path, env_vars={"RETRIEVAL_INSERT_BATCH_BYTES": 2000})
    res = run(cmd, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["rows"] == N
    _check_exact(uri, dataset, reference)


@pytest.fixture
def proxied_server(milvus_server):
    """The real server behind a proxy that tests can stop and start."""
    from support.data import free_port
    from support.tcp_proxy import TcpProxy

    proxy = TcpProxy(milvus_server.listen_port, free_port()).start()
    yield proxy
    proxy.stop()


def _build_until_insert_then(cmd, tmp_path, action, **env_vars):
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env=env(RETRIEVAL_INSERT_BATCH_BYTES=2000, **env_vars),
    )
    out = []
    for line in proc.stdout:
        out.append(line)
        if "upserted rows" in line:
            action()
            break
    rest, _ = proc.communicate(timeout=600)
    return proc.returncode, "".join(out) + rest


@pytest.mark.server
def test_server_restart_mid_build_resumes(dataset, reference, tmp_path, proxied_server):
    uri = f"http://127.0.0.1:{proxied_server.port}"
    VectorStore(uri).drop(EmbeddingKey(MODEL, dataset.name, "val").collection_name)

    def restart():
        proxied_server.stop()  # the server goes away mid-insert ...
        time.sleep(4)
        proxied_server.start()  # ... and comes back on the same port

    code, log = _build_until_insert_then(build_cmd(dataset, tmp_path / "emb", uri), tmp_path, restart)
    # pymilvus' own retry layer or ours (whichever sees the outage first) carries the build through it
    assert code == 0, log[-3000:]
    _check_exact(uri, dataset, reference)


@pytest.mark.server
def test_server_down_gives_clear_error_then_rerun_repairs(dataset, reference, tmp_path, proxied_server):
    uri = f"http://127.0.0.1:{proxied_server.port}"
    VectorStore(uri).drop(EmbeddingKey(MODEL, dataset.name, "val").collection_name)
    cmd = build_cmd(dataset, tmp_path / "emb", uri)
    # and it stays down; 2 retries (1 + 2 s) instead of the default minute of them: the count is what is tested
    code, log = _build_until_insert_then(cmd, tmp_path, proxied_server.stop, RETRIEVAL_MILVUS_RETRIES=2)
    try:
        assert code == 2, log[-2000:]
        assert "unreachable" in log and "failed 3 times" in log and "Traceback" not in log.split("error:")[-1]
    finally:
        proxied_server.start()
    res = run(cmd, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    _check_exact(uri, dataset, reference)


def _mount_tmpfs(path: Path, opts: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()[:80]}): needs root")


@pytest.mark.parametrize("opts,message", [("size=40k", "No space left on device"), ("ro,size=64k", "Read-only")])
def test_full_or_read_only_output_folder(dataset, tmp_path, opts, message):
    mnt = tmp_path / "mnt"
    _mount_tmpfs(mnt, opts)
    try:
        res = run(build_cmd(dataset, mnt / "emb", str(tmp_path / "db.db")), cwd=tmp_path)
        assert res.returncode == 2, res.stderr[-2000:]
        assert message in res.stderr and "Traceback" not in res.stderr
        leftovers = [p for p in mnt.rglob("*.tmp")]
        assert not leftovers, f"temporary files left behind: {leftovers}"
    finally:
        subprocess.run(["umount", str(mnt)])


def test_missing_data_root_and_empty_split(tmp_path):
    res = run(build_cmd(tmp_path / "nowhere", tmp_path / "emb", str(tmp_path / "db.db")), cwd=tmp_path)
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "empty" / "val").mkdir(parents=True)
    res = run(build_cmd(tmp_path / "empty", tmp_path / "emb", str(tmp_path / "db.db")), cwd=tmp_path)
    assert res.returncode == 2 and "no images found" in res.stderr and "Traceback" not in res.stderr
    res = run(
        build_cmd(tmp_path / "empty", tmp_path / "emb", str(tmp_path / "db.db"))[:-1] + ["--split", "test"],
        cwd=tmp_path,
    )
    assert res.returncode == 2 and "splits found: val" in res.stderr
