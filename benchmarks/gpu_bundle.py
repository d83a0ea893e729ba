"""Pack what the GPU steps of a recipe need onto a machine that has no corpus, for benchmarks/gpu_real_run.sh.

    python benchmarks/gpu_bundle.py --recipe recipes/gpu.yaml --out .gpucarry/bundle.tar.xz

The device machine takes a working tree of at most 64 MiB, so the data stages run here (through Dagster, the
same `plasma materialize`) and the bundle carries the store's bookkeeping for every asset (CURRENT, history,
manifests: the evaluation reads each stage's counts from them), the shard files of the assets the training
and evaluation steps read, and the offline source files the evaluation's prompt battery opens (found by
watching which files it opens, not by a list kept by hand).
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
    files = store_files(root) + eval_source_files(recipe)
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
