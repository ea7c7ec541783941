"""torchrun: the process group of a sharded precompute, and its barriers."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed(device: str) -> tuple[int, int, str]:
    """(rank, world size, device) with the process group initialised under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    rank = int(os.environ["RANK"])
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda and device in ("auto", "cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    return rank, world, device


def barrier(world: int) -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if world > 1:
        dist.barrier()
