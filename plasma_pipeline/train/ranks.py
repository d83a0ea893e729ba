"""`python -m plasma_pipeline.train.ranks N --config run.json`: the trainer on N data-parallel ranks of this host
(torchrun --standalone), as the training assets start it for `gpus: N`.

This launcher dies with its parent like the trainer does (PR_SET_PDEATHSIG, SIGTERM): torchrun then sends SIGTERM
to every rank, which checkpoint at the same step boundary and exit. Any rank failing fails the whole run (torchrun
stops the others and exits non-zero)."""

from __future__ import annotations

import os
import sys

from plasma_pipeline.train.workdir import PARENT_PID_ENV, die_with_parent

EXIT_TERMINATED = 143  # as the trainer's own (trainer.EXIT_TERMINATED), without importing torch first


def torchrun_args(nproc: int, trainer_args: list[str]) -> list[str]:
    return ["--standalone", "--nproc_per_node", str(nproc), "-m", "plasma_pipeline.train", *trainer_args]


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    os.environ[PARENT_PID_ENV] = str(os.getpid())  # the ranks' parent is this launcher (torchrun's agent)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or not argv[0].isdigit() or int(argv[0]) < 1:
        print("usage: python -m plasma_pipeline.train.ranks N --config run.json [--set key=value ...]",
              file=sys.stderr)
        return 2
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun

    try:
        torchrun(torchrun_args(int(argv[0]), argv[1:]))  # raises ChildFailedError (exit 1) if a rank fails
    except SignalException:  # torchrun passed SIGTERM/SIGINT on to the ranks, which checkpointed and exited
        return EXIT_TERMINATED
    return 0


if __name__ == "__main__":
    sys.exit(main())
