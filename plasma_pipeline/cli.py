"""`plasma`: the command line around the Dagster definitions and the trained models.

    plasma materialize --stale [--with-training]   run exactly what is stale or missing, until nothing is
    plasma materialize --stale --dry-run           the plan: what would run, and why; runs nothing
    plasma materialize --select 'raw/wiki+'        Dagster's selection syntax (also key:…, group:05_dedup)
    plasma materialize --all                       everything, training included
    plasma status                                  everything a change made stale, and why
    plasma versions ASSET                          the stored versions: time, rows, bytes, inputs, kept/pinned
    plasma lineage ASSET[@VERSION]                 what a version was built from, down to the raw sources
    plasma runs reap [--dry-run]                   mark runs of killed processes failed, free their pool slots
    plasma demo                                    the whole pipeline on the recipe, then a report and a chat turn
    plasma gc [--dry-run]                          delete what retention allows: old unpinned versions, leftovers
    plasma dedup INPUT... --out DIR                the dedup library on any Parquet / jsonl input
    plasma chat | generate | export                talk to, prompt, or export a trained model
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from plasma_pipeline.recipe import REPO_ROOT


def ensure_dagster_home() -> Path:
    """Point DAGSTER_HOME at the project's instance so history and data versions persist between commands."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists() and (REPO_ROOT / "dagster.yaml").exists():
        cfg.symlink_to(REPO_ROOT / "dagster.yaml")
    return home


def _load(recipe: str | None):
    if recipe:
        os.environ["PLASMA_RECIPE"] = recipe
    ensure_dagster_home()
    import dagster as dg

    from plasma_pipeline.defs import build_defs
    from plasma_pipeline.recipe import load_recipe

    r = load_recipe()
    return r, build_defs(r), dg.DagsterInstance.get()


def cmd_materialize(args: argparse.Namespace) -> int:
    from plasma_pipeline.defs.stale import (
        MaterializationFailed, format_plan, keys_from_strings, materialize_stale, run_selection, stale_plan,
    )

    recipe, defs, instance = _load(args.recipe)
    if args.dry_run:
        if args.stale:
            plan = stale_plan(instance, defs)
            if not plan:
                print("nothing is stale: nothing would run")
                return 0
            print("would run, in this order (rerun only while a parent's data version changes):")
            print("\n".join("  " + line for line in format_plan(plan, args.with_training)))
        else:
            graph = defs.resolve_asset_graph()
            keys = graph.toposorted_asset_keys if args.all else keys_from_strings(args.select, defs)
            print(f"would run {len(keys)} asset(s) in one run: " + ", ".join(k.to_user_string() for k in keys))
        return 0
    _reap(instance)
    try:
        if args.stale:
            ran = materialize_stale(instance, defs, include_training=args.with_training)
            print(f"done: {len(ran)} asset(s) materialized"
                  + (": " + ", ".join(k.to_user_string() for k in ran) if ran else " (nothing was stale)"))
            return 0
        job = defs.resolve_implicit_global_asset_job_def()
        run_selection(job, instance, None if args.all else keys_from_strings(args.select, defs))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MaterializationFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print("success")
    return 0


def _reap(instance, log=print) -> list[str]:
    """Before launching: runs left STARTED by a killed process would hold the gpu slot forever (no daemon runs
    for the CLI to notice); mark them failed and free their slots. See plasma_pipeline/defs/runs.py."""
    from plasma_pipeline.defs.runs import reap_before_launch

    return reap_before_launch(instance, log=log)


def cmd_runs_reap(args: argparse.Namespace) -> int:
    ensure_dagster_home()
    import dagster as dg

    from plasma_pipeline.defs.runs import reap_dead_runs

    instance = dg.DagsterInstance.get()
    acted = reap_dead_runs(instance, dry_run=args.dry_run)
    if not acted:
        print("no dead runs: nothing to free")
    else:
        print(f"{len(acted)} run(s) " + ("would be reaped (dry run)" if args.dry_run else "reaped"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from plasma_pipeline.defs.stale import format_plan, stale_plan

    _, defs, instance = _load(args.recipe)
    _reap(instance, log=lambda line: print(line, file=sys.stderr))  # stdout stays the stale list
    plan = stale_plan(instance, defs)
    if not plan:
        print("everything is fresh")
    # stale/missing: changed itself; follows: downstream of one that reruns (stale once that one has rerun)
    print("\n".join(format_plan(plan, include_training=False)))
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    from plasma_pipeline.versions_cli import cmd_versions as run

    return run(args)


def cmd_lineage(args: argparse.Namespace) -> int:
    from plasma_pipeline.versions_cli import cmd_lineage as run

    return run(args)


def cmd_gc(args: argparse.Namespace) -> int:
    from plasma_pipeline.defs.common import store_for
    from plasma_pipeline.recipe import load_recipe
    from plasma_pipeline.retention import gc

    if args.recipe:
        os.environ["PLASMA_RECIPE"] = args.recipe
    store = store_for(load_recipe(check_paths=False))
    removed = gc(store, dry_run=args.dry_run)
    for r in removed:
        print(("would remove " if args.dry_run else "removed ") + str(r))
    print(f"{len(removed)} item(s) {'removable' if args.dry_run else 'removed'} under {store.root}"
          + ("; nothing else is beyond keep_versions or unpinned" if not removed else ""))
    return 0


DEMO_RUN_CONFIG = '{"loggers": {"console": {"config": {"log_level": "INFO"}}}}'


class DemoLog:
    """The demo's console: Dagster's log lines shortened to `HH:MM:SS step  message`, its DEBUG lines and its
    preview / beta / supersession warnings (and the source line Python prints under each) dropped. Everything is still in the run's
    log in the instance, and each training step's record in the model's metrics.jsonl."""

    import re as _re

    LOG = _re.compile(r"^\d{4}-\d\d-\d\d (\d\d:\d\d:\d\d) [+-]\d{4} - dagster - (\w+) - \S+ - [0-9a-f-]{36} - "
                      r"(?:(\S+) - )?(.*)$")
    WARNING = _re.compile(r"(Preview|Beta|Supersession|Deprecation)Warning: ")

    def lines(self, stream):
        skip_source = False
        for raw in stream:
            line = raw.rstrip("\n")
            if skip_source and line.startswith("  "):
                skip_source = False
                continue
            skip_source = False
            if self.WARNING.search(line):
                skip_source = True
                continue
            m = self.LOG.match(line)
            if not m:
                if line.strip():
                    yield line
                continue
            clock, level, step, msg = m.groups()
            if level == "DEBUG":  # executor bookkeeping (step worker started, ...): in the run's log, not here
                continue
            step = (step or "").replace("__", "/")
            if step and msg.startswith(step + ": "):
                msg = msg[len(step) + 2:]
            mark = "" if level == "INFO" else f"{level}: "
            yield f"{clock} {step:<20s} {mark}{msg}"


def cmd_demo(args: argparse.Namespace) -> int:
    """All twelve stages with Dagster's own CLI (what CI and the README run), then the report and one exchange."""
    import subprocess
    import time

    if args.recipe:
        os.environ["PLASMA_RECIPE"] = args.recipe
    ensure_dagster_home()
    from plasma_pipeline.defs.common import store_for
    from plasma_pipeline.recipe import load_recipe

    recipe = load_recipe()  # fail on a bad recipe before Dagster starts
    import dagster as dg

    _reap(dg.DagsterInstance.get())  # the CLI run below has no daemon to free slots of earlier killed runs
    dagster = Path(sys.executable).parent / "dagster"
    cmd = [str(dagster), "asset", "materialize", "-m", "plasma_pipeline.definitions", "--select", "*",
           "--config-json", DEMO_RUN_CONFIG]
    print("$ " + " ".join(cmd[:-2]), flush=True)
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    for line in DemoLog().lines(proc.stdout):
        print(line, flush=True)
    if proc.wait() != 0:
        print("materialization failed; the run's log is above and in the Dagster UI (make ui)", file=sys.stderr)
        return 1
    print(f"\nall twelve stages materialized in {time.time() - t0:.0f} s with recipe {recipe.path}")
    ev = store_for(recipe).current("evaluation")
    print(f"report: {ev.path / 'report.md'}")
    sample = ev.manifest.get("metadata", {}).get("sample_exchange")
    if sample:
        print("\nsample exchange with the chat model:")
        print(f"  user: {sample['prompt']}\n  assistant: {sample['reply']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Subcommands that own their own argument parsing.
    if argv and argv[0] == "dedup":
        from plasma_pipeline.dedup.cli import main as dedup_main

        return dedup_main(argv[1:]) or 0
    if argv and argv[0] == "clean":
        from plasma_pipeline.clean.cli import main as clean_main

        return clean_main(argv[1:]) or 0
    if argv and argv[0] == "mix-search":
        from plasma_pipeline.mix_search.cli import main as mix_search_main

        return mix_search_main(argv[1:])
    if argv and argv[0] in ("chat", "generate", "export"):
        from plasma_pipeline.serve_cli import main as serve_main

        return serve_main(argv) or 0

    p = argparse.ArgumentParser(prog="plasma", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", help="recipe YAML (default: $PLASMA_RECIPE or recipes/default.yaml)")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("materialize", help="materialize assets into the project's Dagster instance",
                       epilog="examples: plasma materialize --stale --with-training --dry-run | "
                              "plasma materialize --select 'raw/wiki+' | plasma materialize --select 'group:05_dedup'")
    g = m.add_mutually_exclusive_group(required=True)
    g.add_argument("--stale", action="store_true", help="only stale or missing assets, repeated until none is left")
    g.add_argument("--all", action="store_true", help="every asset")
    g.add_argument("--select", nargs="+", metavar="SELECTION",
                   help="Dagster asset selection: keys (raw/wiki), raw/wiki+ (and downstream), *deduped (and "
                        "upstream), comma-separated clauses, or key:/group:/tag: clauses")
    m.add_argument("--with-training", action="store_true", help="with --stale: also retrain stale models")
    m.add_argument("--dry-run", action="store_true", help="print what would run, and why; run nothing")
    m.set_defaults(fn=cmd_materialize)
    sub.add_parser("status", help="everything a change made stale, and why",
                   epilog="example: edit mix.weights, then `plasma status` lists pretrain_shards (recipe slice "
                          "`mix` changed) and base_model, chat_model, evaluation after it").set_defaults(fn=cmd_status)
    v = sub.add_parser("versions", help="list an asset's stored versions", epilog="example: plasma versions clean/wiki")
    v.add_argument("asset", help="asset key, e.g. clean/wiki or base_model")
    v.set_defaults(fn=cmd_versions)
    lin = sub.add_parser("lineage", help="what a version was built from, down to the raw sources",
                         epilog="example: plasma lineage chat_model   or   plasma lineage pretrain_shards@3f2a")
    lin.add_argument("target", metavar="ASSET[@VERSION]", help="asset key, optionally @version id (or a prefix)")
    lin.set_defaults(fn=cmd_lineage)
    g = sub.add_parser("gc", help="delete old unpinned versions and leftovers of killed runs",
                       epilog="example: plasma gc --dry-run")
    g.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    g.set_defaults(fn=cmd_gc)
    runs = sub.add_parser("runs", help="runs in the project's Dagster instance")
    runs_sub = runs.add_subparsers(dest="runs_cmd", required=True)
    reap = runs_sub.add_parser("reap", help="mark runs whose processes are dead failed and free their pool slots",
                               epilog="example: plasma runs reap --dry-run")
    reap.add_argument("--dry-run", action="store_true", help="only list what would be reaped")
    reap.set_defaults(fn=cmd_runs_reap)
    sub.add_parser("demo", help="run all twelve stages, then show the report and one chat exchange",
                   epilog="example: PLASMA_RECIPE=recipes/default.yaml plasma demo").set_defaults(fn=cmd_demo)
    sub.add_parser("dedup", help="dedup Parquet/jsonl files (see `plasma dedup --help`)")
    sub.add_parser("clean", help="clean jsonl/Parquet/txt/html files with a recipe's rules (see `plasma clean --help`)")
    sub.add_parser("mix-search", help="find the data mix with proxy models (see `plasma mix-search --help`)")
    for name in ("chat", "generate", "export"):
        sub.add_parser(name, help=f"see `plasma {name} --help`")
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
