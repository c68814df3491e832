"""Concurrent use through `indexer serve` and a server; binding, names, paths and upload limits."""

import socket
import subprocess
import sys

import numpy as np
import pytest
from support.data import free_port, make_tiny_layout
from support.processes import MODEL, build_cmd, env, run

from app.backend import AppSettings, Backend, safe_image_path
from benchmarks.synthetic import synthetic_meta
from embed.common.identity import EmbeddingKey
from embed.sources.imaging import BadImage
from indexer.milvus_store import StoreError, VectorStore

# real CLI processes, builds and the app
pytestmark = pytest.mark.slow

MODEL_B = "timm:test_efficientnet"


def _serve(data_dir, port, host="127.0.0.1"):
    proc = subprocess.Popen(
        [sys.executable, "-m", "indexer", "serve", "--port", str(port), "--host", host, "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(),
    )
    line = proc.stdout.readline()
    assert "serving" in line, line
    return proc


def test_app_queries_while_another_model_builds_through_serve(tmp_path):
    root = make_tiny_layout(tmp_path / "ds", n_per_class=15)
    port = free_port()
    server = _serve(tmp_path / "shared.db", port)
    uri = f"http://127.0.0.1:{port}"
    try:
        first = run(build_cmd(root, tmp_path / "emb", uri), cwd=tmp_path)
        assert first.returncode == 0, first.stderr[-2000:]
        backend = Backend(AppSettings(uri=uri, data_root=str(root), split="val"))
        assert list(backend.collections) == [MODEL]
        query = backend.query_for_row({"id": 0, "relpath": "images/val_0.JPEG", "class_id": "n01440764"})

        build_b = subprocess.Popen(
            build_cmd(root, tmp_path / "emb", uri, MODEL_B),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env(RETRIEVAL_INSERT_BATCH_BYTES=3000),
        )
        answered = 0
        while build_b.poll() is None:
            result = backend.search(MODEL, query, k=5)
            assert result.problem is None and len(result.hits) == 5
            answered += 1
        out = build_b.stdout.read()
        assert build_b.returncode == 0, out[-2000:]
        assert answered > 0
        backend.refresh()
        assert set(backend.collections) == {MODEL, MODEL_B}
        assert backend.store.count(backend.collections[MODEL_B].name) == 30, "the app sees the new rows after flush"
        assert backend.search(MODEL_B, query, k=5).problem is None
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0


@pytest.mark.server
def test_two_builds_at_once_against_a_server(tmp_path, milvus_server):
    root = make_tiny_layout(tmp_path / "ds2", n_per_class=15)
    uri = f"http://127.0.0.1:{milvus_server.listen_port}"
    for m in (MODEL, MODEL_B):
        VectorStore(uri).drop(EmbeddingKey(m, "ds2", "val").collection_name)
    procs = [
        subprocess.Popen(
            build_cmd(root, tmp_path / f"emb{i}", uri, m),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env(),
        )
        for i, m in enumerate((MODEL, MODEL_B))
    ]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-2000:]
    store = VectorStore(uri)
    for m in (MODEL, MODEL_B):
        ids, *_ = store.read_all(EmbeddingKey(m, "ds2", "val").collection_name)
        assert ids.tolist() == list(range(30))


def _non_loopback_address():
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    v4 = [a for a in out if "." in a and not a.startswith("127.")]
    return v4[0] if v4 else None


def test_serve_binds_loopback_only(tmp_path):
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    port = free_port()
    server = _serve(tmp_path / "sec.db", port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        with pytest.raises(OSError):
            with socket.create_connection((addr, port), timeout=5):
                pass
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_refuses_a_database_in_use(tmp_path):
    port = free_port()
    server = _serve(tmp_path / "busy.db", port)
    try:
        res = run(
            [
                sys.executable,
                "-m",
                "indexer",
                "serve",
                "--port",
                str(free_port()),
                "--data-dir",
                str(tmp_path / "busy.db"),
            ],
            timeout=60,
        )
        assert res.returncode == 2 and "already open" in res.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("evil", ["x' or id >= 0 or '", 'a"b', "id in [1]", "drop;collection", "../../x"])
def test_names_cannot_inject_into_milvus(tmp_path, evil):
    from embed.models.catalog import UnknownModel, get_spec

    with pytest.raises(UnknownModel):
        get_spec(evil)
    store = VectorStore(str(tmp_path / "n.db"))
    with pytest.raises(StoreError):
        store.count(evil)
    name = EmbeddingKey(evil, evil, evil).collection_name
    assert all(c.isalnum() or c == "_" for c in name)


def test_app_never_reads_outside_the_data_root(tmp_path):
    root = tmp_path / "root"
    (root / "val").mkdir(parents=True)
    (root / "val" / "ok.jpg").write_bytes(b"x")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (root / "val" / "link.jpg").symlink_to(outside)
    assert safe_image_path(str(root), "val", "ok.jpg") == (root / "val" / "ok.jpg").resolve()
    for evil in ("../../etc/passwd", "/etc/passwd", "link.jpg", "../secret.txt", "a/../../secret.txt", ""):
        with pytest.raises(BadImage):
            safe_image_path(str(root), "val", evil)


def test_crafted_stored_paths_are_not_opened_by_the_app(tmp_path, monkeypatch):
    """A collection whose rows point outside the data root: the app shows no file and keeps working."""
    root = make_tiny_layout(tmp_path / "ds3", n_per_class=3)
    uri = str(tmp_path / "crafted.db")
    store = VectorStore(uri)
    meta = synthetic_meta(MODEL, 4, "ds3", str(root), timm_name="test_resnet", weights_fingerprint="random:seed0")
    name = EmbeddingKey(MODEL, "ds3", "val").collection_name
    store.ensure_collection(name, meta)
    paths = ["images/val_0.JPEG", "../../../../etc/passwd", "/etc/shadow", "images/../../val_annotations.txt"]
    store.upsert(name, np.arange(4), np.eye(4, dtype=np.float32), ["n01440764"] * 4, paths, progress=False)
    store.flush(name)
    meta.complete, meta.rows = True, 4
    store.set_meta(name, meta)
    backend = Backend(AppSettings(uri=uri, data_root=str(root), split="val"))
    opened = []
    import app.backend as ab

    real = ab.load_rgb
    monkeypatch.setattr(ab, "load_rgb", lambda src, *a, **k: (opened.append(str(src)), real(src, *a, **k))[1])
    for i, p in enumerate(paths):
        if i == 0:
            continue
        with pytest.raises(BadImage):
            backend.query_for_row({"id": i, "relpath": p, "class_id": "n01440764"})
    q = backend.query_for_row({"id": 0, "relpath": paths[0], "class_id": "n01440764"})
    result = backend.search(MODEL, q, k=3)
    assert result.problem is None and len(result.hits) == 3
    for h in result.hits:
        if h.relpath != paths[0]:
            with pytest.raises(BadImage):
                safe_image_path(backend.data_root, "val", h.relpath)
    assert all(str(root) in o for o in opened), opened
