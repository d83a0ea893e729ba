"""Pack what the GPU steps of a recipe need onto a machine that has no corpus, for benchmarks/gpu_real_run.sh.

    python benchmarks/gpu_bundle.py --recipe recipes/gpu.yaml --out .gpucarry/bundle.tar.xz

The device machine takes a working tree of at most 64 MiB, so the data stages run here (through Dagster, the
same `plasma materialize`) and the bundle carries the store's bookkeeping for every asset (CURRENT, history,
manifests: the evaluation reads each stage's counts from them), the shard files of the assets the training
and evaluation steps read, the offline source files the recipe names (the definitions check at load that they
exist) and any other file the evaluation's prompt battery opens (found by watching what it opens).
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Assets whose shard files the GPU steps read: pretrain/SFT shards, the tokenizer, and the instructions (the
# evaluation's held-out battery is checked against them).
DATA_FOR_GPU = ("pretrain_shards", "sft_shards", "tokenizer", "instructions")
BOOKKEEPING_MAX_BYTES = 1 << 20  # any other file this small travels too (manifests, stats, CURRENT, history)


def store_files(root: Path) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        asset = p.relative_to(root).parts[0]
        if asset in DATA_FOR_GPU or p.stat().st_size <= BOOKKEEPING_MAX_BYTES and p.suffix != ".parquet":
            out.append(p)
    return out


def offline_source_files(recipe) -> list[Path]:
    """Every file the recipe's offline sources need to exist: the definitions check them when they load."""
    from plasma_pipeline.collect.offline import required_paths

    out = []
    for src in recipe.sources.values():
        if getattr(src.collect, "kind", None) != "offline":
            continue
        for p in required_paths(src.collect):
            if p.is_relative_to(ROOT):  # the code corpus is this Python's stdlib: the other machine has its own
                out += [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    return out


def eval_source_files(recipe) -> list[Path]:
    """The files under the offline sources folder that the evaluation's prompt battery opens."""
    from plasma_pipeline.instruct import eval_prompts

    sources = (ROOT / "data" / "sources").resolve()
    opened: set[str] = set()

    def hook(event, args):
        if event == "open" and isinstance(args[0], str) and args[0].startswith(str(sources)):
            opened.add(args[0])

    sys.addaudithook(hook)
    eval_prompts(recipe.instructions.sources_root, per_domain=recipe.instructions.eval_per_domain)
    return [Path(p) for p in sorted(opened) if Path(p).is_file()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/gpu.yaml")
    ap.add_argument("--out", default=".gpucarry/bundle.tar.xz")
    args = ap.parse_args()
    from plasma_pipeline.defs.common import store_for
    from plasma_pipeline.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    root = Path(store_for(recipe).root)
    for asset in DATA_FOR_GPU:
        if not (root / asset).exists():
            raise SystemExit(f"{root / asset}: missing; materialize the data stages first "
                             f"(plasma --recipe {args.recipe} materialize --select '*pretrain_shards' '*sft_shards')")
    files = list(dict.fromkeys(store_files(root) + offline_source_files(recipe) + eval_source_files(recipe)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w:xz") as tar:
        for f in files:
            tar.add(f, arcname=str(f.resolve().relative_to(ROOT)))
    tmp.replace(out)
    raw = sum(f.stat().st_size for f in files)
    print(f"{out}: {len(files)} files, {raw / 2**20:.1f} MiB raw, {out.stat().st_size / 2**20:.1f} MiB packed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
