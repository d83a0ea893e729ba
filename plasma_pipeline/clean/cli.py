"""`plasma clean PATH... --out DIR`: the cleaning library (stage 2) on any jsonl / Parquet / txt / html input.

    plasma clean data/*.jsonl pages/ --out cleaned/ [--profile prose|code|docs] [--languages fr,es]
                 [--recipe-source wiki [--recipe recipes/default.yaml]] [--processes N] [--on-error skip]

What a recipe's `clean:` slice does to your files, before running the pipeline: the defaults (CleanConfig), or
with `--recipe-source NAME` that source's slice of the recipe ($PLASMA_RECIPE or --recipe); --profile and
--languages override either. Files are read by the same streaming reader as the pipeline's local sources
(collect/reader.py); a big file is split into line ranges / row groups so --processes workers share it.

Writes `DIR/part-*.parquet` (the kept documents: id, text, then the other columns) and `DIR/stats.json`
(docs_in, docs_kept, chars_in, chars_kept, per rule {docs, chars}, what reading counted, workers_used), each
through a temporary file renamed into place, and prints a short table of kept / dropped by rule. The output
bytes do not depend on --processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from plasma_pipeline.clean import CleanConfig, clean_table
from plasma_pipeline.collect import reader
from plasma_pipeline.collect.reader import InputError, Part, PartPool, ReadOptions
from plasma_pipeline.progress import bytes_docs_bar, part_bytes

STATS_FILE = "stats.json"
PART_ROWS = 50_000  # most documents per output file
PART_CHARS = 256 * 1024 * 1024  # most text characters per output file
ROW_GROUP_ROWS = 5_000
_READ_ORDER = ("files", "empty_files", "dropped/missing_text", "dropped/malformed_line", "dropped/malformed_row",
               "dropped/non_utf8", "repaired/non_utf8")


def build_parser(prog: str = "plasma clean") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run the cleaning stage (normalisation, HTML stripping, language ID, Gopher / C4 / FineWeb "
        "or code rules) on jsonl / Parquet / txt / html files and write the kept documents as Parquet, with "
        "stats.json saying what each rule dropped.",
        epilog="example: plasma clean my-docs/ --out cleaned/ --profile docs --languages fr,es",
    )
    p.add_argument("inputs", nargs="+", metavar="PATH", help="jsonl (.gz), Parquet, txt or html files, globs or "
                   "directories")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (part-*.parquet + stats.json)")
    p.add_argument("--profile", help="cleaning profile (prose, code, ...); default: the recipe source's, else prose")
    p.add_argument("--languages", metavar="LIST", help="allowed languages, comma-separated (fr,es); '' or 'any' "
                   "for any language; default: the recipe source's, else en")
    p.add_argument("--recipe-source", metavar="NAME", help="take this source's clean: slice from the recipe "
                   "instead of the defaults")
    p.add_argument("--recipe", metavar="FILE", help="recipe YAML for --recipe-source (default: $PLASMA_RECIPE or "
                   "recipes/default.yaml)")
    p.add_argument("--processes", type=int, default=1, metavar="N", help="worker processes (0 = all cores; "
                   "default 1); a big file is split so N workers share it")
    p.add_argument("--on-error", choices=("error", "skip"), default="error",
                   help="a malformed line or non-UTF-8 bytes: stop naming file:line (error, the default) or drop "
                   "and count it (dropped/malformed_line, dropped/non_utf8)")
    p.add_argument("--txt-unit", choices=("file", "line"), default="file",
                   help="txt files: one document per file (default) or per non-empty line")
    return p


def parse_languages(value: str) -> list[str]:
    if value.strip().lower() in ("", "any", "*"):
        return []
    return [x.strip() for x in value.split(",") if x.strip()]


def clean_config(recipe_source: str | None = None, recipe: str | None = None, profile: str | None = None,
                 languages: list[str] | None = None) -> CleanConfig:
    """The defaults, or a recipe source's clean slice, with `profile` / `languages` overriding.
    ValueError (RecipeError) names the problem."""
    if recipe_source is not None:
        from plasma_pipeline.recipe import load_recipe

        r = load_recipe(recipe, check_paths=False)
        if recipe_source not in r.sources:
            raise ValueError(f"--recipe-source: no source {recipe_source!r} in {r.path} "
                             f"(sources: {', '.join(r.sources)})")
        base = r.sources[recipe_source].clean
    else:
        base = CleanConfig()
    changes: dict[str, Any] = {}
    if profile is not None:
        changes["profile"] = profile
    if languages is not None:
        changes["languages"] = languages
    return dataclasses.replace(base, **changes) if changes else base


def _clean_part(part: Part, opts: ReadOptions, cfg: CleanConfig) -> dict[str, Any]:
    """Read one part in bounded batches and clean each: the kept rows, the counters, docs and chars read."""
    read_stats: Counter = Counter()
    clean_stats: Counter = Counter()
    docs_in = chars_in = 0
    outs = []
    for table in reader.iter_tables(part, opts, read_stats, doc=True):
        docs_in += table.num_rows
        chars_in += _chars(table)
        outs.append(clean_table(table, cfg, clean_stats))
    kept = (pa.concat_tables(outs) if len(outs) > 1 else outs[0]) if outs else None
    return {"table": kept, "clean": clean_stats, "read": read_stats, "docs_in": docs_in, "chars_in": chars_in}


def _chars(table: pa.Table) -> int:
    if not table.num_rows:
        return 0
    return int(pc.sum(pc.fill_null(pc.utf8_length(table.column("text")), 0)).as_py() or 0)


def _id_text_first(table: pa.Table) -> pa.Table:
    names = table.column_names
    return table.select([c for c in ("id", "text") if c in names] + [c for c in names if c not in ("id", "text")])


def rule_table(cfg: CleanConfig, counters: Counter) -> dict[str, dict[str, int | None]]:
    """Per rule {docs, chars}: docs from dropped/<rule>; chars from chars_dropped/<rule> + chars_removed/<rule>
    (null when the cleaning library counted neither)."""
    names: list[str] = []
    try:
        from plasma_pipeline.clean import active_rule_names

        names = list(active_rule_names(cfg))
    except Exception:  # noqa: BLE001 - the table still lists every rule found in the counters
        pass
    for key in sorted(counters):
        prefix, _, rule = key.partition("/")
        if prefix in ("dropped", "chars_dropped", "chars_removed") and rule and rule not in names:
            names.append(rule)
    out: dict[str, dict[str, int | None]] = {}
    for rule in names:
        measured = f"chars_dropped/{rule}" in counters or f"chars_removed/{rule}" in counters
        chars = counters.get(f"chars_dropped/{rule}", 0) + counters.get(f"chars_removed/{rule}", 0)
        out[rule] = {"docs": int(counters.get(f"dropped/{rule}", 0)), "chars": int(chars) if measured else None}
    return out


def clean_files(inputs: Sequence[str], out_dir: str | os.PathLike, cfg: CleanConfig, processes: int = 1,
                on_error: str = "error", txt_unit: str = "file", extra: dict[str, Any] | None = None) -> dict:
    """Clean the files into `out_dir`; returns the stats.json report."""
    t0 = time.perf_counter()
    processes = processes or os.cpu_count() or 1
    opts = reader.cli_read_options(on_error=on_error, txt_unit=txt_unit)
    files = reader.expand_inputs(inputs, "clean input")
    parts = [p for f in files for p in reader.plan_parts(f, reader.file_format(f), processes, txt_unit)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    pool = PartPool(processes, len(parts))
    totals = {"docs_in": 0, "chars_in": 0, "docs_kept": 0, "chars_kept": 0}
    clean_stats: Counter = Counter()
    read_stats: Counter = Counter({"files": len(files)})
    schema: list[pa.Schema] = []

    def kept_tables():
        for part, res in zip(parts, pool.imap(_clean_part, parts, opts, cfg)):
            bar.update_docs(res["docs_in"], part_bytes(part))
            clean_stats.update(res["clean"])
            read_stats.update(res["read"])
            totals["docs_in"] += res["docs_in"]
            totals["chars_in"] += res["chars_in"]
            if res["table"] is not None:
                table = _id_text_first(res["table"])
                if not schema:
                    schema.append(table.schema)
                if table.num_rows:
                    yield table

    written: list[str] = []
    bar = bytes_docs_bar(sum(part_bytes(p) for p in parts), "clean")
    try:
        for table in reader.rebatch(kept_tables(), PART_ROWS, PART_CHARS):
            name = f"part-{len(written):05d}.parquet"
            pq.write_table(table, tmp / name, compression="zstd", row_group_size=ROW_GROUP_ROWS)
            written.append(name)
            totals["docs_kept"] += table.num_rows
            totals["chars_kept"] += _chars(table)
        if not written:  # nothing kept: one empty part keeps the schema
            from plasma_pipeline.schema import CLEAN_SCHEMA

            name = "part-00000.parquet"
            pq.write_table((schema[0] if schema else CLEAN_SCHEMA).empty_table(), tmp / name)
            written.append(name)
        for name in written:
            os.replace(tmp / name, out / name)
        for old in out.glob("part-*.parquet"):
            if old.name not in written:
                old.unlink()
        report = {
            "inputs": files,
            **(extra or {}),
            "profile": cfg.profile,
            "languages": list(cfg.languages),
            **totals,
            "rules": rule_table(cfg, clean_stats),
            "read": {k: int(read_stats[k]) for k in sorted(read_stats, key=_read_key)},
            "parts": written,
            "parts_read": len(parts),
            "processes": processes,
            "workers_used": pool.workers_used,
            "seconds": round(time.perf_counter() - t0, 3),
            "counters": dict(sorted(clean_stats.items())),
        }
        stats_tmp = tmp / STATS_FILE
        stats_tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
        os.replace(stats_tmp, out / STATS_FILE)
    finally:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _read_key(key: str) -> tuple[int, str]:
    return (_READ_ORDER.index(key) if key in _READ_ORDER else len(_READ_ORDER), key)


def format_report(report: dict, out_dir: str | os.PathLike) -> str:
    """The short table printed after a run: kept and dropped by rule (docs, chars)."""
    docs_in, chars_in = report["docs_in"], report["chars_in"]

    def pct(n: int, total: int) -> str:
        return f"{100 * n / total:5.1f}%" if total else "    -"

    rows = [("rule", "docs", "", "chars", "")]
    for rule, v in report["rules"].items():
        if v["docs"] or v["chars"]:
            chars = "-" if v["chars"] is None else f"{v['chars']:,}"
            dropped = bool(v["docs"])
            rows.append((f"dropped/{rule}" if dropped else f"edited/{rule}", f"{v['docs']:,}" if dropped else "",
                         pct(v["docs"], docs_in) if dropped else "", chars,
                         pct(v["chars"] or 0, chars_in) if v["chars"] else ""))
    rows.append(("kept", f"{report['docs_kept']:,}", pct(report["docs_kept"], docs_in),
                 f"{report['chars_kept']:,}", pct(report["chars_kept"], chars_in)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [f"plasma clean: {len(report['inputs'])} file(s), {docs_in:,} docs / {chars_in:,} chars in "
             f"(profile {report['profile']}, languages {','.join(report['languages']) or 'any'}), "
             f"{report['workers_used']} worker(s) over {report['parts_read']} part(s)"]
    for r in rows:
        lines.append(f"  {r[0]:<{widths[0]}}  {r[1]:>{widths[1]}} {r[2]:>{widths[2]}}  "
                     f"{r[3]:>{widths[3]}} {r[4]:>{widths[4]}}".rstrip())
    read = {k: v for k, v in report["read"].items() if k != "files" and v}
    if read:
        lines.append("  read: " + ", ".join(f"{k} {v:,}" for k, v in read.items()))
    lines.append(f"wrote {len(report['parts'])} part file(s) and {STATS_FILE} to {out_dir}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.processes < 0:
        print("error: --processes must be >= 0", file=sys.stderr)
        return 2
    try:
        cfg = clean_config(args.recipe_source, args.recipe, args.profile,
                           parse_languages(args.languages) if args.languages is not None else None)
    except (ValueError, TypeError) as e:  # RecipeError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        report = clean_files(args.inputs, args.out, cfg, args.processes, args.on_error, args.txt_unit,
                             extra={"recipe_source": args.recipe_source})
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except InputError as e:  # bad input: the message names file:line (anything else: a traceback)
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_report(report, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
