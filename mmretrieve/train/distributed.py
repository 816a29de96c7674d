"""Distributed helpers for torchrun (NCCL on CUDA, gloo on CPU).

Features are all-gathered WITH gradient, every rank computes the loss of the whole global batch,
and gradients are averaged across ranks after backward. With ``torch.distributed.nn``'s all-gather
(whose backward sums the gradients of every rank), the averaged gradient equals the gradient a
single process would compute on the global batch — which the DDP test checks.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "gather_with_grad", "gather_objects", "average_gradients", "barrier"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK,
    MASTER_ADDR/PORT); a single process otherwise. Already-initialised groups are reused."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def gather_with_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``x`` from every rank (rank order); gradients flow back to each rank's slice."""
    if not info.enabled:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable plain data produced by this program, e.g. captions), in rank order."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def average_gradients(params: Iterable[torch.nn.Parameter], info: DistInfo, bucket_mb: float = 25.0) -> None:
    """All-reduce (mean) the gradients of ``params`` across ranks, in flat buckets."""
    if not info.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    limit = int(bucket_mb * 2**20)
    bucket: list[torch.Tensor] = []
    size = 0

    def flush() -> None:
        if not bucket:
            return
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        flat /= info.world_size
        offset = 0
        for g in bucket:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        bucket.clear()

    for g in grads:
        bucket.append(g)
        size += g.numel() * g.element_size()
        if size >= limit:
            flush()
            size = 0
    flush()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
