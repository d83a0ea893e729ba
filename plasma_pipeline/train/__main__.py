"""CLI: python -m plasma_pipeline.train --config run.json [--set key=value ...]

Dies with its parent: on Linux the kernel sends SIGTERM when the launching process dies (the trainer then
checkpoints at the step boundary and exits 143); if $PLASMA_PARENT_PID is set and that process is already gone,
it exits 143 before doing anything. Holds out_dir/.trainer.lock for the whole run; exits 75 if another trainer
holds it past lock_timeout_s."""

from __future__ import annotations

import argparse
import json
import sys

from plasma_pipeline.train.config import TrainConfig
from plasma_pipeline.train.workdir import EXIT_LOCKED, WorkDirLocked, die_with_parent


def main(argv: list[str] | None = None) -> int:
    die_with_parent()  # first, before the seconds spent importing torch
    ap = argparse.ArgumentParser(prog="python -m plasma_pipeline.train", description=__doc__)
    ap.add_argument("--config", required=True, help="TrainConfig as JSON")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field; VALUE is parsed as JSON when it can be")
    args = ap.parse_args(argv)
    with open(args.config) as f:
        d = json.load(f)
    for kv in args.set:
        k, _, v = kv.partition("=")
        try:
            d[k] = json.loads(v)
        except json.JSONDecodeError:
            d[k] = v
    cfg = TrainConfig.from_dict(d)
    from plasma_pipeline.train.trainer import train

    try:
        train(cfg)
    except WorkDirLocked as e:
        print(f"plasma_pipeline.train: {e}", file=sys.stderr, flush=True)
        return EXIT_LOCKED
    return 0


if __name__ == "__main__":
    sys.exit(main())
