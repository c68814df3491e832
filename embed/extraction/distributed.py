"""torchrun coordination: which rank am I, and waiting for the others. A no-op in a single process."""

from __future__ import annotations

import os
from typing import Tuple

import torch


def rank_and_world() -> Tuple[int, int]:
    """(rank, world size) under torchrun; (0, 1) otherwise. Joins the process group on first use."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finish() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
