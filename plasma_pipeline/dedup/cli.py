"""Command line: `python -m plasma_pipeline.dedup INPUT... --out DIR [--bands 14 --rows 8 ...]`."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import fields

from plasma_pipeline.dedup.config import DedupConfig
from plasma_pipeline.dedup.files import dedup_files


def build_parser(prog: str = "python -m plasma_pipeline.dedup") -> argparse.ArgumentParser:
    d = DedupConfig()
    p = argparse.ArgumentParser(prog=prog, description="Exact + MinHash LSH dedup of Parquet/jsonl files.")
    p.add_argument("inputs", nargs="+", help="Parquet or jsonl files, globs or directories")
    p.add_argument("--out", required=True, help="output directory (survivors as Parquet + dedup_stats.json)")
    for f in fields(DedupConfig):
        default = getattr(d, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, list):
            p.add_argument(flag, nargs="*", default=None, help=f"default: {default}")
        else:
            p.add_argument(flag, type=type(default), default=None, help=f"default: {default}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in fields(DedupConfig) if getattr(args, f.name) is not None}
    if ("bands" in overrides or "rows" in overrides) and "num_perm" not in overrides:
        d = DedupConfig()
        overrides["num_perm"] = overrides.get("bands", d.bands) * overrides.get("rows", d.rows)
    try:
        cfg = DedupConfig(**overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stats: Counter = Counter()
    result = dedup_files(args.inputs, args.out, cfg, stats)
    summary = {
        k: result.metadata[k]
        for k in (
            "docs",
            "kept",
            "dup_rate",
            "candidate_pairs",
            "confirmed_pairs",
            "index_bytes",
            "cluster_size_histogram",
        )
    }
    print(json.dumps({"counters": dict(stats), **summary}, indent=2))
    return 0
