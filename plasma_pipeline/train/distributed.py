"""Data parallelism under torchrun: the process group, each rank's slice of the global batch, and the collectives
the engines and the loop need. Every function is a no-op (or the identity) in a single process, so a run without
torchrun takes exactly the path it took before.

The global batch is cfg.batch_size, read by every rank in the single-process order (the loader position is
global, so a checkpoint resumes on any world size); rank r trains rows [r*b/W, (r+1)*b/W). Each rank's loss is
normalised by the global batch's target count, so summing gradients over ranks gives the single-process
gradient exactly (up to fp32 summation order)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from plasma_pipeline.train.data import Batch


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def all_reduce_sum_(tensors: list[torch.Tensor]) -> None:
    """Sum tensors (same device, same dtype) over ranks in place, with one collective."""
    if world_size() == 1 or not tensors:
        return
    if len(tensors) == 1:
        dist.all_reduce(tensors[0])
        return
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    flat = _flatten_dense_tensors(tensors)
    dist.all_reduce(flat)
    for t, f in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
        t.copy_(f)


@dataclass
class DataParallel:
    """This process's place in the run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group, so we tear it down

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """One GPU per rank: cuda becomes cuda:LOCAL_RANK."""
        if self.enabled and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def local_batch_size(self, batch_size: int) -> int:
        if batch_size % self.world:
            raise ValueError(f"batch_size {batch_size} does not split over {self.world} ranks; "
                             f"use a multiple of the world size")
        return batch_size // self.world

    def shard(self, batch: Batch) -> Batch:
        """This rank's rows of the global batch; the loss is still averaged over the global batch's targets."""
        if not self.enabled:
            return batch
        n = self.local_batch_size(batch.inputs.shape[0])
        s = slice(self.rank * n, (self.rank + 1) * n)
        return dataclasses.replace(batch, inputs=batch.inputs[s], targets=batch.targets[s],
                                   mask=None if batch.mask is None else batch.mask[s],
                                   global_targets=batch.n_targets)

    def _flag_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any (SIGTERM reaches ranks at different steps)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)], device=self._flag_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """t summed over ranks (a copy, on t's device; the collective runs where the backend wants it)."""
        if not self.enabled:
            return t
        x = t.to(self._flag_device(), copy=True)
        dist.all_reduce(x)
        return x.to(t.device)

    def broadcast(self, obj):
        """Rank 0's obj on every rank (picklable)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def setup(device_name: str) -> DataParallel:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the env):
    nccl when training on CUDA, gloo on the CPU. Without torchrun (no WORLD_SIZE, or 1) nothing happens."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DataParallel()
    if dist.is_initialized():  # the caller set up the group
        return DataParallel(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DataParallel(dist.get_rank(), dist.get_world_size(), local, owns_group=True)
