from __future__ import annotations

import os

# tests never touch the network: hub weights resolve from the local cache or not at all
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one compute thread per worker (and per process it starts): with `-n 2` on 2 cores, two workers of two
    # spinning OpenMP threads each ran the benchmark smoke test 10x slower than one worker alone (measured)
    for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_threads, "1")

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from support.data import _uses_server, bad_images, jpeg_bytes, make_tiny_layout, tiny_imagenet_root, write_files  # noqa: E402
from support.milvus import server_unavailable  # noqa: E402

# a verdict on the code, never on the machine's speed: no per-example deadline, and no failure because a loaded
# machine generated the examples slowly (each test's own @settings still sets its number of examples)
settings.register_profile("any-load", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("any-load")


@pytest.fixture
def tiny_root() -> Path:
    return tiny_imagenet_root()


@pytest.fixture
def imagefolder(tmp_path) -> Path:
    """data_root with split 'val': 3 classes x 4 good images, plus bad files in class b."""
    root = tmp_path / "folder_ds"
    for ci, cls in enumerate(["n01440764", "n01443537", "zebra crossings"]):
        files = [(f"img{i}.jpg", jpeg_bytes(ci * 10 + i)) for i in range(4)]
        write_files(root / "val" / cls, files)
    write_files(root / "val" / "n01443537", bad_images())
    return root


@pytest.fixture
def tiny_layout():
    """``make_tiny_layout`` for test modules (they take fixtures, not imports from this file)."""
    return make_tiny_layout


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A real Milvus 2.3 standalone from the `milvus` package, started once for the whole test session.

    Ready when its health endpoint says so (benchmarks.milvus_server.wait_healthy), however long that takes on
    a loaded machine. It cannot be told to bind loopback only, so every port is random and it stops with the
    session. A failed start is remembered by pytest for the session: every server test reports the same reason.
    """
    try:
        import milvus  # noqa: F401
    except ImportError:
        server_unavailable("the `milvus` package (embedded Milvus server) is not installed: pip install -e '.[test]'")
    from benchmarks.milvus_server import ServerDidNotStart, start_embedded_milvus

    try:
        server = start_embedded_milvus(tmp_path_factory.mktemp("milvus_server"))
    except ServerDidNotStart as e:
        server_unavailable(f"the embedded Milvus server did not start: {e}")
    yield server
    server.stop()


@pytest.fixture(params=["lite", pytest.param("server", marks=pytest.mark.server)])
def store_uri(request, tmp_path):
    """A fresh database URI on each backend: a Milvus Lite folder, or a database on the real server."""
    if request.param == "lite":
        return str(tmp_path / "milvus.db")
    server = request.getfixturevalue("milvus_server")
    return f"http://127.0.0.1:{server.listen_port}"


def pytest_collection_modifyitems(config, items):
    """Every test that needs the server carries the ``server`` marker, so that ``-m "not server"`` leaves none."""
    unmarked = [item.nodeid for item in items if _uses_server(item) and item.get_closest_marker("server") is None]
    if unmarked:
        raise pytest.UsageError(
            "tests that use the Milvus server must be marked @pytest.mark.server: " + ", ".join(unmarked)
        )
    # The longest modules first, the rest in their own order: `--dist loadfile` hands modules out in collection
    # order, and a long one handed out last keeps one worker busy while the others wait (measured on 2 cores: the
    # fast subset's workers sat idle for about 100 of its 209 s).
    first = {name: rank for rank, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: first.get(item.nodeid.split("::")[0], len(first)))  # stable: order kept within


# the fast subset's longest modules on 2 quiet cores (--durations), longest first; a rough order is enough
LONGEST_MODULES = (
    "tests/test_indexer_commands.py",
    "tests/test_benchmarks_run.py",
    "tests/test_suggested_commands.py",
    "tests/test_gpu_benchmark.py",
    "tests/test_extract.py",
    "tests/test_device_decode.py",
    "tests/test_host_memory.py",
    "tests/test_figure_colours.py",
    "tests/test_downloads.py",
)


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject.toml): a worker per core, at most 4, since each worker that reaches a server test starts
    its own Milvus server (`--dist loadfile` keeps a module's tests, and its module fixtures, on one worker)."""
    return max(1, min(4, os.cpu_count() or 1))
