"""Process-group setup for `torchrun` (nccl on GPUs, gloo on CPUs) and the few collectives the engine uses.

Without torchrun's environment (or with WORLD_SIZE=1) everything runs in one process and the collectives
are no-ops, so the same command and code path serve both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["DistContext", "all_reduce_sum", "broadcast_buffers", "init_distributed", "shutdown_distributed"]


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Join torchrun's process group when launched by it; pick the device ("auto": cuda when available)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("config field 'device' = 'cuda' but CUDA is not available here; use 'auto' or 'cpu'")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistContext(rank, world, local_rank, local_world, dev)


def shutdown_distributed(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: Tensor, ctx: DistContext) -> Tensor:
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Rank 0's buffers (BatchNorm statistics) everywhere, so every rank evaluates the same model."""
    if ctx.distributed:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)
