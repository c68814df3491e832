"""Started as the README says (`streamlit run app/main.py` from the repository root), the app listens on 127.0.0.1
only and announces neither a network URL nor usage-statistics collection (.streamlit/config.toml)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from support.cli import repo_env
from support.data import REPO, free_port

# starts a real streamlit server
pytestmark = pytest.mark.slow


def _listening_addresses(port: int):
    """Local addresses of the sockets in LISTEN state on ``port``, from /proc/net/tcp and tcp6."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                raw = bytes.fromhex(address)
                # the kernel writes each 32-bit word in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                family = socket.AF_INET if width == 8 else socket.AF_INET6
                found.append(socket.inet_ntop(family, words))
    return found


def _own_non_loopback_address():
    """This machine's address on its outward interface, if it has one (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_the_app_listens_on_loopback_only_and_collects_no_statistics(tmp_path):
    port = free_port()
    env = repo_env(HOME=str(tmp_path))  # no ~/.streamlit of this machine's user
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app/main.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--",
            "--uri",
            str(tmp_path / "milvus.db"),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the app did not answer on 127.0.0.1")
        addresses = _listening_addresses(port)
        assert addresses and set(addresses) <= {"127.0.0.1"}, addresses
        other = _own_non_loopback_address()
        if other:
            with pytest.raises(OSError):
                socket.create_connection((other, port), timeout=2).close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert f"URL: http://127.0.0.1:{port}" in output, output
    assert "Network URL" not in output and "usage statistics" not in output.lower(), output
