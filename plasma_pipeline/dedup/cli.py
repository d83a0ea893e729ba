"""Command line: `plasma dedup INPUT... --out DIR [--bands 14 --rows 8 ...] [--on-error skip]`
(also `python -m plasma_pipeline.dedup`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import fields

from plasma_pipeline.collect.reader import InputError
from plasma_pipeline.dedup.config import DedupConfig
from plasma_pipeline.dedup.files import dedup_files


def build_parser(prog: str = "plasma dedup") -> argparse.ArgumentParser:
    d = DedupConfig()
    p = argparse.ArgumentParser(
        prog=prog,
        description="Exact + MinHash LSH dedup of jsonl / Parquet / txt / html files, read by the same streaming "
        "reader as the pipeline's local sources. A big file is split (line ranges, row groups) so --processes "
        "workers share it.",
        epilog="example: plasma dedup data/*.jsonl --out deduped/ --processes 2",
    )
    p.add_argument("inputs", nargs="+", help="jsonl (.gz), Parquet, txt or html files, globs or directories")
    p.add_argument("--out", required=True, help="output directory (survivors as Parquet + dedup_stats.json)")
    p.add_argument("--on-error", choices=("error", "skip"), default="error",
                   help="a malformed line or non-UTF-8 bytes: stop naming file:line (error, the default) or drop "
                   "and count it (dropped/malformed_line, dropped/non_utf8)")
    p.add_argument("--txt-unit", choices=("file", "line"), default="file",
                   help="txt files: one document per file (default) or per non-empty line")
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
    try:
        result = dedup_files(args.inputs, args.out, cfg, stats, on_error=args.on_error, txt_unit=args.txt_unit)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (InputError, KeyError) as e:  # bad input: the message names file:line (anything else: a traceback)
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 1
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
            "parts",
            "workers_used",
        )
    }
    print(json.dumps({"counters": dict(stats), **summary}, indent=2))
    return 0
