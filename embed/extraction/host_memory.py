"""Host memory for inference on a CPU: what one batch frees, the next batch reuses.

glibc's malloc gives every block above its mmap threshold (32 MiB at most) a mapping of its own and unmaps it
when it is freed. A CPU forward pass frees and allocates such blocks every batch (a 32-image batch through
EfficientNet-Lite0 has 49 MiB activations), so each batch faults its activations in again, one zeroed 4 KiB page
at a time: on a 2-core VM a 43 s extraction of 1,000 images spent 29 s of CPU time in the kernel, and ran at half
speed (benchmarks/README.md, "host memory kept for the next batch"). With mappings off and the heap trimmed only past 2 GiB, freed
blocks stay in the process and the next batch takes them without a fault. The cost is a higher resident size
between batches (the largest batch's working set stays mapped).

jemalloc or tcmalloc through LD_PRELOAD would do the same, but they must be installed and set before Python starts;
this is one call at run time, on the C library every Linux wheel of torch runs with.
"""

from __future__ import annotations

import ctypes
import logging
import platform
from typing import Optional

from embed.common.settings import DEFAULTS, RetrievalSettings

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int: the largest it allows

_state: Optional[bool] = None
# the process's choice: the setting's default until its entry point applies the settings it read
_wanted: bool = DEFAULTS.keep_freed_memory


def apply_settings(config: RetrievalSettings) -> None:
    """The entry point's ``RETRIEVAL_KEEP_FREED_MEMORY``, for the first CPU model run of the process to apply (it is
    process state: the C library's allocator, set once)."""
    global _wanted
    _wanted = config.keep_freed_memory
    if _state and not _wanted:  # mallopt has run: a process cannot take it back
        log.debug("host memory: freed blocks are already kept for reuse in this process")


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks for reuse, once per process. True when it does; False where the C library is
    not glibc or the settings applied (``apply_settings``: ``RETRIEVAL_KEEP_FREED_MEMORY=0``) keep its defaults."""
    global _state
    if _state is not None:
        return _state
    _state = False
    if not _wanted or platform.libc_ver()[0] != "glibc":
        return _state
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return _state
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # both: with mappings off alone, the freed top of the heap is still trimmed past 128 KiB; with trimming off
    # alone, large blocks are still mapped and unmapped
    _state = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    log.debug("host memory: freed blocks %s", "kept for reuse" if _state else "returned (mallopt refused)")
    return _state


def describe() -> str:
    """For logs and benchmark records."""
    return "freed blocks kept for reuse (glibc mallopt)" if _state else "C library defaults"
