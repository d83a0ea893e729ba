"""Mixture search on the offline default recipe, CPU: the search itself, then a confirmation run.

    flock /tmp/plasma-bench.lock .venv/bin/python benchmarks/mix_search_bench.py [--n 11] [--tokens 200000]

The recipe is recipes/default.yaml with its own store (data/bench-results/mix_search/store) and Dagster instance
(.../dagster_home), plus a `mix_search:` section: the recipe's mix and `--n` Dirichlet samples around it
(concentration `--concentration`), each a `toy` proxy (the CPU tests' shape: dim 64, 2 layers) trained on
`--tokens` tokens, objective mean val bpb over the five domains. Three timed phases, each one process whose
wall time and CPU seconds (getrusage of the waited-for process tree) are recorded:

1. inputs: `dagster asset materialize --select "*tokenizer"` (collect ... deduped, tokenizer): what the search reads;
2. search: `plasma mix-search --apply suggested.yaml` (val set, every variant's shards and proxy, the report);
3. confirmation: the recipe's own model (`model:` / `pretrain:` sections: the demo's 1.8M-parameter toy, 300
   steps) trained with `plasma materialize --select pretrain_shards base_model` on the recipe's mix and then on
   the suggested mix (suggested.yaml), both scored on the search's fixed val set (every domain's held-out
   documents; the same documents both pretrain_shards hold out) with evaluate.val, up to --val-rows rows a domain.

Results go to benchmarks/results/mix_search_<date>.json. The CPU is shared with other work on this machine, so
wall time is only an upper bound of what the work needs; CPU seconds are reported beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(name: str, cmd: list[str], env: dict, log: Path) -> dict:
    print(f"[{name}] $ {' '.join(cmd)}", flush=True)
    c0, t0 = _cpu(), time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=f, text=True)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    print(proc.stdout, flush=True)
    print(f"[{name}] rc={proc.returncode} wall {wall:.0f} s, CPU {cpu:.0f} s, load {os.getloadavg()[0]:.1f}",
          flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (rc {proc.returncode}); log: {log}")
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "stdout": proc.stdout}


def score(store: Path, model_version: str, val_rows: int) -> dict:
    from plasma_pipeline.evaluate import EvalConfig
    from plasma_pipeline.evaluate.val import val_metrics

    model = store / "base_model" / "versions" / model_version
    val = store / "mix_search" / "val_set" / "versions" / (store / "mix_search" / "val_set" / "CURRENT").read_text().strip()
    m = val_metrics(model, val, model / "tokenizer.model", EvalConfig(val_max_rows=val_rows, device="cpu"))
    bpb = {d: v["bits_per_byte"] for d, v in m.items()}
    return {"bpb": bpb, "objective": sum(bpb.values()) / len(bpb), "rows_per_domain": val_rows,
            "bytes": {d: v["bytes"] for d, v in m.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=9, help="sampled mixtures (the recipe's mix is one more variant)")
    ap.add_argument("--concentration", type=float, default=10.0)
    ap.add_argument("--tokens", type=int, default=200_000, help="train tokens per proxy")
    ap.add_argument("--val-rows", type=int, default=256, help="val rows per domain for the confirmation scores")
    ap.add_argument("--base-recipe", type=Path, default=ROOT / "recipes" / "default.yaml",
                    help="the recipe searched (default: the offline default; a tiny one for a dry run)")
    ap.add_argument("--work", type=Path, default=ROOT / "data" / "bench-results" / "mix_search")
    ap.add_argument("--keep", action="store_true", help="reuse the work folder (default: start empty)")
    ap.add_argument("--phases", default="inputs,search,confirm",
                    help="comma-separated: inputs (prepare, e.g. outside the bench lock: not a target), search, "
                         "confirm; later phases read what --keep kept")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                    / f"mix_search_{dt.date.today().isoformat()}.json")
    args = ap.parse_args()

    work = args.work
    if work.exists() and not args.keep:
        shutil.rmtree(work)
    (work / "dagster_home").mkdir(parents=True, exist_ok=True)
    (work / "dagster_home" / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    raw = yaml.safe_load(args.base_recipe.read_text())
    raw["store"]["root"] = str(work / "store")
    raw["mix_search"] = {
        "sample": {"n": args.n, "seed": 0, "concentration": args.concentration},
        "model": {"name": "toy"},
        "tokens_per_variant": args.tokens,
        "batch_size": 16, "lr": 0.003, "warmup": 10,
        "objective": {"kind": "mean_bpb"},
    }
    recipe = work / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw, sort_keys=False))
    suggested = work / "suggested.yaml"
    env = {**os.environ, "DAGSTER_HOME": str(work / "dagster_home"), "PLASMA_RECIPE": str(recipe),
           "PYTHONUNBUFFERED": "1"}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    res: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "commit": commit,
                 "cpus": os.cpu_count(), "load_at_start": os.getloadavg()[0], "recipe": str(recipe),
                 "base_recipe": str(args.base_recipe),
                 "mix_search": raw["mix_search"], "phases": {}}

    phases = set(args.phases.split(","))
    if "inputs" in phases:
        res["phases"]["inputs"] = timed("inputs", [str(BIN / "dagster"), "asset", "materialize", "-m",
                                                   "plasma_pipeline.definitions", "--select", "*tokenizer"],
                                        env, work / "inputs.log")
        (work / "inputs.json").write_text(json.dumps(res["phases"]["inputs"]))
    elif (work / "inputs.json").exists():
        res["phases"]["inputs"] = {**json.loads((work / "inputs.json").read_text()), "earlier_run": True}
    if "search" not in phases:
        return 0
    search = timed("search", [str(BIN / "plasma"), "mix-search", "--apply", str(suggested), "--force"], env,
                   work / "search.log")
    res["phases"]["search"] = search
    store = work / "store"
    rep = store / "mix_search" / "report"
    rep_meta = json.loads((rep / "versions" / (rep / "CURRENT").read_text().strip() / "manifest.json").read_text())["metadata"]
    res["report"] = {"path": str(rep / "versions" / (rep / "CURRENT").read_text().strip() / "report.md"),
                     "variants_done": rep_meta["variants_done"], "fits": rep_meta["fits"],
                     "suggestion": rep_meta["suggestion"], "missing": rep_meta["missing"]}
    res["search_within_15_min"] = search["wall_s"] <= 900 and rep_meta["variants_done"] >= 8

    conf = {}
    for label, path in (("recipe_mix", recipe), ("suggested_mix", suggested)):
        e = {**env, "PLASMA_RECIPE": str(path)}
        ph = timed(f"confirm/{label}", [str(BIN / "plasma"), "materialize", "--select", "pretrain_shards",
                                        "base_model"], e, work / f"confirm_{label}.log")
        vid = (store / "base_model" / "CURRENT").read_text().strip()
        ph["base_model_version"] = vid
        ph["weights"] = yaml.safe_load(path.read_text())["mix"]["weights"]
        ph.update(score(store, vid, args.val_rows))
        conf[label] = ph
        print(f"[confirm/{label}] objective {ph['objective']:.4f}  " +
              ", ".join(f"{d} {b:.4f}" for d, b in ph["bpb"].items()), flush=True)
    res["confirmation"] = conf
    a, b = conf["recipe_mix"]["objective"], conf["suggested_mix"]["objective"]
    res["suggestion_beats_recipe_mix"] = b < a
    res["objective_delta_bpb"] = b - a
    res["objective_delta_pct"] = 100 * (b - a) / a
    res["load_at_end"] = os.getloadavg()[0]
    for ph in res["phases"].values():
        ph.pop("stdout", None)
    for ph in conf.values():
        ph.pop("stdout", None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, sort_keys=True))
    print(json.dumps({k: res[k] for k in ("search_within_15_min", "suggestion_beats_recipe_mix",
                                          "objective_delta_bpb", "objective_delta_pct")}, indent=1))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
