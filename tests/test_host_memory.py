"""On glibc, a CPU run keeps what one batch frees for the next: allocating a batch-sized tensor again takes no page
faults, where glibc's defaults fault every page in anew. Counted with getrusage in a fresh process, not timed."""

import json
import platform
import subprocess
import sys

import pytest
from support.data import REPO
from support.waits import HANG_S

from embed.common.settings import RetrievalSettings, SettingsError

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's (mallopt)")

# a fresh interpreter: whether mallopt ran is process state
PROBE = """
import json, resource, torch
from embed.common.settings import RetrievalSettings
from embed.extraction.embedder import resolve_device
from embed.extraction import host_memory
host_memory.apply_settings(RetrievalSettings.from_environment())  # as each entry point does
resolve_device("cpu")
pages = 64 * 2**20 // resource.getpagesize()
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)  # 64 MiB, written through: every page touched
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del x
print(json.dumps({"faults": faults, "pages": pages, "state": host_memory.describe()}))
"""


def _probe(keep: str) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "RETRIEVAL_KEEP_FREED_MEMORY": keep, "PATH": "/usr/bin:/bin"},
        timeout=HANG_S,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_cpu_run_reuses_freed_batch_memory_without_page_faults():
    kept = _probe("1")
    assert kept["state"] == "freed blocks kept for reuse (glibc mallopt)"
    # the first allocations map pages (an early freed block can be split by small ones); the later ones reuse them
    assert kept["faults"][0] > kept["pages"] // 2, kept
    assert sum(kept["faults"]) < 3.5 * kept["pages"], kept
    assert max(kept["faults"][-4:]) < kept["pages"] // 100, kept


def test_with_the_setting_off_every_allocation_faults_its_pages_in_again():
    default = _probe("0")
    assert default["state"] == "C library defaults"
    assert min(default["faults"]) > default["pages"] // 2, default


def test_the_setting_reads_as_a_flag():
    assert RetrievalSettings.from_environment({}).keep_freed_memory is True
    assert RetrievalSettings.from_environment({"RETRIEVAL_KEEP_FREED_MEMORY": "off"}).keep_freed_memory is False
    with pytest.raises(SettingsError, match="RETRIEVAL_KEEP_FREED_MEMORY='maybe': expected 1 or 0"):
        RetrievalSettings.from_environment({"RETRIEVAL_KEEP_FREED_MEMORY": "maybe"})
