"""`plasma`: the command line around the Dagster definitions and the trained models.

    plasma materialize --stale [--with-training]   run exactly what is stale or missing, until nothing is
    plasma materialize --all                       everything, training included
    plasma status                                  what is stale or missing, and why
    plasma demo                                    the whole pipeline on the recipe, then a report and a chat turn
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
    from plasma_pipeline.defs.stale import RUN_CONFIG, keys_from_strings, materialize_stale

    recipe, defs, instance = _load(args.recipe)
    if args.stale:
        ran = materialize_stale(instance, defs, include_training=args.with_training)
        print(f"done: {len(ran)} asset(s) materialized" + (": " + ", ".join(k.to_user_string() for k in ran) if ran else " (nothing was stale)"))
        return 0
    job = defs.resolve_implicit_global_asset_job_def()
    if args.all:
        keys = None
    else:
        keys = keys_from_strings(args.select)
    result = job.execute_in_process(instance=instance, asset_selection=keys, raise_on_error=False, run_config=RUN_CONFIG)
    print("success" if result.success else "FAILED")
    return 0 if result.success else 1


def cmd_status(args: argparse.Namespace) -> int:
    from plasma_pipeline.defs.stale import stale_keys

    _, defs, instance = _load(args.recipe)
    todo = stale_keys(instance, defs)
    if not todo:
        print("everything is fresh")
    for key, status in todo:
        print(f"{status.lower():8s} {key.to_user_string()}")
    return 0


DEMO_RUN_CONFIG = '{"loggers": {"console": {"config": {"log_level": "INFO"}}}}'


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
    dagster = Path(sys.executable).parent / "dagster"
    cmd = [str(dagster), "asset", "materialize", "-m", "plasma_pipeline.definitions", "--select", "*",
           "--config-json", DEMO_RUN_CONFIG]
    print("$ " + " ".join(cmd[:-2]), flush=True)
    t0 = time.time()
    if subprocess.run(cmd, cwd=REPO_ROOT).returncode != 0:
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
    if argv and argv[0] in ("chat", "generate", "export"):
        from plasma_pipeline.serve_cli import main as serve_main

        return serve_main(argv) or 0

    p = argparse.ArgumentParser(prog="plasma", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", help="recipe YAML (default: $PLASMA_RECIPE or recipes/default.yaml)")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("materialize", help="materialize assets into the project's Dagster instance")
    g = m.add_mutually_exclusive_group(required=True)
    g.add_argument("--stale", action="store_true", help="only stale or missing assets, repeated until none is left")
    g.add_argument("--all", action="store_true", help="every asset")
    g.add_argument("--select", nargs="+", metavar="KEY", help="asset keys, e.g. raw/wiki pretrain_shards")
    m.add_argument("--with-training", action="store_true", help="with --stale: also retrain stale models")
    m.set_defaults(fn=cmd_materialize)
    sub.add_parser("status", help="list stale and missing assets").set_defaults(fn=cmd_status)
    sub.add_parser("demo", help="run all twelve stages, then show the report and one chat exchange").set_defaults(fn=cmd_demo)
    sub.add_parser("dedup", help="dedup Parquet/jsonl files (see `plasma dedup --help`)")
    for name in ("chat", "generate", "export"):
        sub.add_parser(name, help=f"see `plasma {name} --help`")
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
