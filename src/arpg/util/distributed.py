"""Process-group setup from torchrun's environment, model wrapping (DDP / FSDP) and small collectives.

Launch: ``torchrun --nproc_per_node N -m arpg.cli train ...`` (or ``torchrun --no-python ... arpg train``).
torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; without them
(or with ``WORLD_SIZE=1``) everything runs in one process with no process group. Backend: NCCL on CUDA,
gloo on CPU.

FSDP is PyTorch's ``fully_shard`` (FSDP2, FULL_SHARD semantics: parameters, gradients and optimizer state
are sharded over all ranks; every self / cross block is its own unit, the embeddings, shared K/V
projection, norms and head belong to the root unit). It works on CPU with gloo too (tested).
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from .devices import pick_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, world size, its device and the backend (None when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def _device_for(name: str | None, local_rank: int) -> torch.device:
    name = "cuda" if name in (None, "auto") and torch.cuda.is_available() else name
    dev = pick_device(name)
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", local_rank)  # under torchrun each process takes its local rank's GPU
    return dev


def init_distributed(device: str | None = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's environment variables (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device_for(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world <= 1:
        return DistInfo(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev, backend=backend)


def shutdown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        # Leave together: a rank that tears the group down while another still writes files (rank 0 exports
        # the final weights alone) can abort gloo's background threads at exit. Not while an exception
        # propagates (called from a ``finally``): the other ranks may never reach this barrier.
        if sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``x`` over ranks (in place on a copy)."""
    x = x.detach().clone()
    if info.distributed:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= info.world_size
    return x


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` as a list indexed by rank."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def wrap_model(model: nn.Module, info: DistInfo, fsdp: bool = False) -> nn.Module:
    """Return the module to train: ``model`` itself, DDP around it, or ``model`` sharded in place by FSDP."""
    if fsdp:
        if not info.distributed:
            return model  # FSDP over one rank would only add overhead
        from torch.distributed.fsdp import fully_shard

        blocks = list(getattr(model, "layers").self_dec) + list(getattr(model, "layers").cross_dec)
        for blk in blocks:
            fully_shard(blk)
        fully_shard(model)
        return model
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    # The only buffer is the constant RoPE table: no need to re-broadcast it every step.
    return DDP(model, device_ids=ids, broadcast_buffers=False)
