"""`plasma mix-search [--apply NEW_RECIPE.yaml]`: run the mixture search, print the report and the suggested mix.

What is fresh is not rerun: the data stages up to `deduped` and `tokenizer`, the fixed val set, then every
variant's shards and proxy model (one Dagster run per variant, so a failed variant leaves the others done), then
the report. With `--apply` the suggested weights go into a new recipe file (a copy of the current one with
`mix.weights` replaced); the current recipe is never written.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import yaml


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="plasma mix-search", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", help="recipe YAML (default: $PLASMA_RECIPE or recipes/default.yaml)")
    ap.add_argument("--apply", metavar="NEW_RECIPE.yaml", help="write the suggested weights into this new file")
    ap.add_argument("--force", action="store_true", help="with --apply: overwrite NEW_RECIPE.yaml if it exists")
    ap.add_argument("--variants", nargs="+", metavar="NAME", help="only these variants (default: all)")
    return ap


def apply_suggestion(recipe_path: Path, weights: dict[str, float], new_path: Path, note: str = "",
                     force: bool = False) -> Path:
    """A copy of the recipe at `recipe_path` with mix.weights = `weights`, written atomically to `new_path`,
    then loaded to prove it valid. Refuses to touch the recipe itself, or an existing file without `force`."""
    from plasma_pipeline.recipe import load_recipe

    new_path = Path(new_path)
    if new_path.resolve() == Path(recipe_path).resolve():
        raise ValueError(f"--apply {new_path}: that is the current recipe; name a new file")
    if new_path.exists() and not force:
        raise ValueError(f"--apply {new_path}: the file exists (pass --force to overwrite it)")
    raw = yaml.safe_load(Path(recipe_path).read_text(encoding="utf-8"))
    raw.setdefault("mix", {})["weights"] = {d: float(w) for d, w in weights.items()}
    if "name" in raw and raw["name"]:
        raw["name"] = f"{raw['name']}-mix-search"
    header = f"# Written by `plasma mix-search --apply` from {recipe_path}: mix.weights is the suggested mix.\n"
    if note:
        header += "".join(f"# {line}\n" for line in note.splitlines())
    new_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_path.with_name(f".{new_path.name}.tmp-{os.getpid()}")
    tmp.write_text(header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    try:
        load_recipe(tmp, check_paths=False)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, new_path)
    return new_path


def _run(job, instance, keys, partition: str | None = None):
    from plasma_pipeline.defs.stale import RUN_CONFIG

    return job.execute_in_process(instance=instance, asset_selection=keys, partition_key=partition,
                                  raise_on_error=False, run_config=RUN_CONFIG)


def run_search(recipe, defs, instance, only: list[str] | None = None, log=print) -> dict:
    """Materialize what the search needs that is stale or missing; returns {report, failed, ran}."""
    import dagster as dg

    from plasma_pipeline.defs import mix_search_assets as msa
    from plasma_pipeline.defs.stale import run_selection, stale_keys

    job = defs.resolve_implicit_global_asset_job_def()
    graph = defs.resolve_asset_graph()
    upstream = dg.AssetSelection.assets("deduped", "tokenizer").upstream().resolve(graph)
    for _ in range(20):  # Dagster marks only direct children stale: repeat until the inputs are fresh
        todo = [k for k, _ in stale_keys(instance, defs) if k in upstream]
        if not todo:
            break
        log("inputs: materializing " + ", ".join(k.to_user_string() for k in todo))
        run_selection(job, instance, todo)
    msa.observe_variants(instance, defs)
    variants = list(msa.variants_of(recipe))
    unknown = sorted(set(only or ()) - set(variants))
    if unknown:
        raise ValueError(f"--variants: unknown {unknown} (variants: {', '.join(variants)})")
    st = msa.statuses(instance, defs)
    if st[msa.VAL_SET.to_user_string()] != "FRESH":
        log("val set: materializing mix_search/val_set")
        run_selection(job, instance, [msa.VAL_SET])
    failed, ran = [], []
    for p in variants:
        if only and p not in only:
            continue
        st = msa.statuses(instance, defs)
        keys = [k for k in msa.PARTITIONED if st[f"{k.to_user_string()}[{p}]"] != "FRESH"]
        if keys and keys[0] == msa.SHARDS:
            keys = list(msa.PARTITIONED)
        if not keys:
            log(f"variant {p}: fresh")
            continue
        log(f"variant {p}: materializing " + ", ".join(k.to_user_string() for k in keys))
        result = _run(job, instance, keys, p)
        ran.append(p)
        if not result.success:
            failed.append(p)
            log(f"variant {p}: FAILED (run {result.run_id}); the other variants go on")
    st = msa.statuses(instance, defs)
    if st[msa.REPORT.to_user_string()] != "FRESH":
        log("report: materializing mix_search/report")
        run_selection(job, instance, [msa.REPORT])
    return {"failed": failed, "ran": ran}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.recipe:
        os.environ["PLASMA_RECIPE"] = args.recipe
    from plasma_pipeline.cli import _reap, ensure_dagster_home
    from plasma_pipeline.defs import build_defs
    from plasma_pipeline.defs.common import store_for
    from plasma_pipeline.defs.stale import MaterializationFailed
    from plasma_pipeline.mix_search.config import MixSearchConfig
    from plasma_pipeline.recipe import RecipeError, load_recipe

    try:
        recipe = load_recipe()
    except RecipeError as e:
        print(e, file=sys.stderr)
        return 2
    if args.apply and Path(args.apply).resolve() == recipe.path.resolve():
        print(f"--apply {args.apply}: that is the current recipe; name a new file", file=sys.stderr)
        return 2
    if args.apply and Path(args.apply).exists() and not args.force:
        print(f"--apply {args.apply}: the file exists (pass --force to overwrite it)", file=sys.stderr)
        return 2
    if recipe.mix_search is None:
        print(f"{recipe.path} has no mix_search section: searching with its defaults", file=sys.stderr)
        recipe = dataclasses.replace(recipe, mix_search=MixSearchConfig())
    ensure_dagster_home()
    import dagster as dg

    instance = dg.DagsterInstance.get()
    _reap(instance)
    defs = build_defs(recipe)
    try:
        out = run_search(recipe, defs, instance, args.variants)
    except (MaterializationFailed, ValueError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    report = store_for(recipe).current("mix_search/report")
    meta = report.manifest.get("metadata") or {}
    print(f"report: {report.path / 'report.md'}")
    print(f"variants done: {meta.get('variants_done')}" + (f"; failed: {', '.join(out['failed'])}" if out["failed"] else ""))
    for f in meta.get("fits") or []:
        rho = f["cv_spearman"]
        print(f"fit {f['model']}: leave-one-out Spearman {'n/a' if rho is None else f'{rho:.3f}'}")
    sug = meta.get("suggestion")
    if not sug:
        print("no suggestion (too few finished variants for a regression)")
        return 1
    print(f"suggested weights (predicted objective {sug['predicted_objective']:.4f} vs "
          f"{sug['recipe_predicted_objective']:.4f} predicted for the recipe's mix):")
    for d, w in sug["weights"].items():
        print(f"  {d}: {w:.4f}   (recipe {sug['recipe_weights'][d]:.4f})")
    if args.apply:
        note = (f"Report: {report.path / 'report.md'}\nPredicted at proxy scale by the {sug['model']} model "
                f"(leave-one-out Spearman {sug['cv_spearman']}); confirm by training on it.")
        try:
            path = apply_suggestion(recipe.path, sug["weights"], Path(args.apply), note, force=args.force)
        except (ValueError, RecipeError) as e:
            print(f"FAILED: {e}", file=sys.stderr)
            return 1
        print(f"wrote {path} (the current recipe {recipe.path} is unchanged)")
    return 1 if out["failed"] else 0
