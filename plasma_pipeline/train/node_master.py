"""One host master per node for data-parallel streaming (MegaTrain's shared host state).

Under torchrun with several ranks on one host, the fp32 master and the two AdamW moments live once per node in
shared memory (`/dev/shm`, or $PLASMA_SHM_DIR) instead of once per rank: host memory stays at 12 bytes per
parameter per node. Every rank streams layers from the same master; after the gradient all-reduce each rank runs
the host AdamW on its own 1/N range of every unit, so the optimizer work per node is done once, split over the
ranks' threads. A small shared table of per-unit step counters says when every local rank has finished a unit, and
a rank waits for it before it next reads that unit's weights (x86 keeps stores in order, so a counter seen means
the weights before it are seen too).

Ranks on other nodes keep their own node master and step it identically (same summed gradient, same kernel)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from plasma_pipeline.train.host_rings import register_pinned


def local_world() -> tuple[int, int]:
    """(local rank, ranks on this node) as torchrun sets them; (0, 1) outside a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


class NodeMaster:
    """Shared master / exp_avg / exp_avg_sq slabs of `total` fp32 elements, and the per-unit completion table."""

    def __init__(self, total: int, n_units: int, cuda: bool):
        self.local_rank, self.local_world = local_world()
        run = os.environ.get("TORCHELASTIC_RUN_ID", "") or os.environ.get("MASTER_PORT", "0")
        node = os.environ.get("GROUP_RANK", "0")
        base = Path(os.environ.get("PLASMA_SHM_DIR", "/dev/shm"))
        data, table = base / f"plasma-master-{run}-{node}.f32", base / f"plasma-master-{run}-{node}.done"
        need = 3 * total * 4 + self.local_world * n_units * 8
        if self.local_rank == 0:
            fs = os.statvfs(base)
            free = fs.f_bavail * fs.f_frsize
            if free < need:
                raise RuntimeError(f"{base} has {free / 2**30:.1f} GiB free; the node's shared host master needs "
                                   f"{need / 2**30:.1f} GiB (set PLASMA_SHM_DIR to a larger tmpfs)")
            for path, size in ((data, 3 * total * 4), (table, self.local_world * n_units * 8)):
                with open(path, "wb") as f:  # sparse and zero-filled: the moments start at zero
                    f.truncate(size)
        dist.barrier()
        slab = torch.from_file(str(data), shared=True, size=3 * total, dtype=torch.float32)
        self.done = torch.from_file(str(table), shared=True, size=self.local_world * n_units,
                                    dtype=torch.int64).view(self.local_world, n_units)
        dist.barrier()  # every rank has mapped both files: the names can go, the mappings stay
        if self.local_rank == 0:
            data.unlink(missing_ok=True)
            table.unlink(missing_ok=True)
        if cuda:
            register_pinned(slab)
        self.master, self.exp_avg, self.exp_avg_sq = slab[:total], slab[total : 2 * total], slab[2 * total :]
        self.writes_state = self.local_rank == 0  # one rank fills the shared state (init, resume)

    def owned(self, numel: int) -> tuple[int, int]:
        """The element range of a unit whose AdamW this rank runs."""
        return numel * self.local_rank // self.local_world, numel * (self.local_rank + 1) // self.local_world

    def mark(self, unit: int, epoch: int) -> None:
        self.done[self.local_rank, unit] = epoch

    def wait(self, unit: int, epoch: int) -> None:
        """Until every local rank has finished AdamW update number `epoch` of `unit`."""
        column = self.done[:, unit]
        while int(column.min()) < epoch:
            time.sleep(5e-5)

    def filled(self) -> None:
        """After the writing rank filled the state (init or resume): nobody reads it before."""
        dist.barrier()
