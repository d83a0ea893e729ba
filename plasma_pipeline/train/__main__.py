"""CLI: python -m plasma_pipeline.train --config run.json [--set key=value ...]"""

from __future__ import annotations

import argparse
import json
import sys

from plasma_pipeline.train.config import TrainConfig


def main(argv: list[str] | None = None) -> int:
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

    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
