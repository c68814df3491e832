"""Two processes on one Lite database, the one serving it exits mid-way (issue 39, item 2): the other says so in
one line and carries on, with none of pymilvus' or grpc's error reports."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from support.cli import repo_env as env

CLIENT = textwrap.dedent(
    """
    import subprocess, sys
    import numpy as np
    from embed.common.cli_args import setup_logging
    from embed.common.logs import quiet_grpc_environment

    quiet_grpc_environment()
    setup_logging(False)  # as every command sets logging up
    from benchmarks.synthetic import synthetic_meta
    from indexer.milvus_store import VectorStore

    uri = sys.argv[1]
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys; from indexer.milvus_store import VectorStore; "
         f"VectorStore({uri!r}).list_collections(); print('ready', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert owner.stdout.readline().strip() == "ready"
    store = VectorStore(uri)
    store.ensure_collection("c", synthetic_meta("effnet-lite0", 4, "d", "/d"))
    store.upsert("c", np.arange(3), np.ones((3, 4), np.float32), ["a"] * 3, ["x"] * 3, progress=False)
    print("SHARING", store.sharing(), flush=True)
    owner.stdin.write("\\n"); owner.stdin.flush(); owner.wait()  # the serving process ends normally
    store.flush("c")
    print("ROWS", store.count("c"), flush=True)
    """
)


def test_the_owner_exiting_is_one_line_and_no_library_noise(tmp_path):
    p = subprocess.run(
        [sys.executable, "-c", CLIENT, str(tmp_path / "m.db")],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SHARING served by pid" in p.stdout and "ROWS 3" in p.stdout, p.stdout
    assert "RPC error" not in p.stderr and "Traceback" not in p.stderr and "_log_rpc_error" not in p.stderr, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    retries = [line for line in lines if "retrying" in line]
    assert len(retries) == 1, p.stderr
    assert "the process that served the database to this one has exited" in retries[0]
    assert all(" INFO " in line or line == retries[0] for line in lines), p.stderr
