"""Where the trainer runs: the recipe's `launcher:` choice, and the worker side of the remote launcher.

`pretrain.launcher` / `sft.launcher` pick the Dagster Pipes client that starts `python -m plasma_pipeline.train`:
- `subprocess` (default): a child of the Dagster step process on the same machine (dg.PipesSubprocessClient).
- `dask`: a task on a Dask cluster (`address:` of its scheduler). The task runs the trainer as a child of the Dask
  worker on the GPU host and streams its Pipes messages and stdout/stderr back through a Dask queue, so the
  Dagster step sees logs and metrics live (plasma_pipeline/defs/launch.py is the Dagster side).

The work dir and the data shards are paths: the GPU host must see the store at the same path as the Dagster step
(a shared mount). Only the Pipes channel crosses the network through Dask.

Stdlib only here: the launcher choice is validated by the recipe loader, and `dask_worker` is imported on a Dask
worker that needs no Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LAUNCHER_KINDS = ("subprocess", "dask")


@dataclass
class LauncherConfig:
    """`launcher:` in a training section of the recipe."""

    kind: Literal["subprocess", "dask"] = "subprocess"
    # Dask scheduler address (tcp://gpu-host:8786); required for kind dask.
    address: str = ""
    # Dask worker resources the trainer task claims, e.g. {GPU: 1}: it then runs only on a worker started with
    # `dask worker --resources GPU=1`, one trainer per GPU. Empty: any worker.
    resources: dict[str, float] = field(default_factory=dict)
    # Seconds to reach the scheduler before the step fails.
    connect_timeout_s: float = 30.0
    # After the step is interrupted: seconds the trainer gets to checkpoint and exit (it got SIGINT) before it is
    # killed. The local subprocess client waits the same 20 s.
    termination_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if self.kind == "dask" and not self.address:
            raise ValueError("address: required for kind dask (the scheduler, e.g. tcp://gpu-host:8786)")
        if self.kind == "subprocess" and self.address:
            raise ValueError("address: only for kind dask (the subprocess launcher runs on this machine)")
        if self.connect_timeout_s <= 0:
            raise ValueError("connect_timeout_s: must be > 0")
        if self.termination_timeout_s < 0:
            raise ValueError("termination_timeout_s: must be >= 0")
        for name, amount in self.resources.items():
            if amount <= 0:
                raise ValueError(f"resources.{name}: must be > 0")
