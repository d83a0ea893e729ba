"""Pack what the GPU steps of a recipe need onto a machine that has no corpus, for benchmarks/gpu_real_run.sh.

    python benchmarks/gpu_bundle.py pack --recipe recipes/gpu.yaml --out .gpucarry/bundle.tar.gz     # here
    python benchmarks/gpu_bundle.py unpack --recipe recipes/gpu.yaml --bundle .gpucarry/bundle.tar.gz  # there

The device machine takes a working tree of at most 64 MiB, so the data stages run here (through Dagster, the
same `plasma materialize`) and the bundle carries the store's bookkeeping for every data asset (CURRENT, history,
manifests: the evaluation reads each stage's counts from them), whole versions of the assets the training and
evaluation steps read, nothing of what the GPU host builds, the offline source files the recipe names (the definitions check at load that they
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
# What the GPU host builds: none of it travels (a half-copied version there would stand in for the real one).
GPU_BUILT = ("base_model", "chat_model", "evaluation", "mix_search")


def store_files(root: Path) -> list[Path]:
    """Every version of DATA_FOR_GPU whole; of the other data assets only the bookkeeping (CURRENT, history and
    each version's manifest.json: the evaluation reads every stage's counts from them). No work dirs, locks,
    leases or temp dirs."""
    out = []
    for p in sorted(root.rglob("*")):
        parts = p.relative_to(root).parts
        if not p.is_file() or parts[0] in GPU_BUILT or any(x == "work" or x.startswith(".") for x in parts):
            continue
        if parts[0] in DATA_FOR_GPU or "versions" not in parts or p.name == "manifest.json":
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


def store_root_of(recipe_path: str) -> Path:
    """The recipe's store.root as a local path, read from the YAML alone: unpacking comes before the recipe can
    load (it checks that the offline sources, which the bundle brings, exist)."""
    import yaml

    from plasma_pipeline.recipe import REPO_ROOT

    root = Path((yaml.safe_load(Path(recipe_path).read_text()).get("store") or {}).get("root", "data/assets"))
    if "://" in str(root):
        raise SystemExit(f"{recipe_path}: store.root {root} is object storage; the GPU host reads it directly")
    return root if root.is_absolute() else REPO_ROOT / root


def pack(recipe_path: str, out: Path) -> list[Path]:
    from plasma_pipeline.defs.common import store_for
    from plasma_pipeline.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    root = Path(store_for(recipe).root)
    for asset in DATA_FOR_GPU:
        if not (root / asset).exists():
            raise SystemExit(f"{root / asset}: missing; materialize the data stages first "
                             f"(plasma --recipe {recipe_path} materialize --select '*pretrain_shards' '*sft_shards')")
    store = store_files(root)
    repo = list(dict.fromkeys(offline_source_files(recipe) + eval_source_files(recipe)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:  # gzip: xz packs ~10 % smaller at ten times the time
        for f in store:
            tar.add(f, arcname="store/" + str(f.relative_to(root)))
        for f in repo:
            tar.add(f, arcname="repo/" + str(f.resolve().relative_to(ROOT)))
    tmp.replace(out)
    return store + repo


def unpack(recipe_path: str, bundle: Path) -> None:
    """store/ into the recipe's store root, repo/ into this checkout."""
    root = store_root_of(recipe_path)
    with tarfile.open(bundle) as tar:
        for m in tar.getmembers():
            top, _, rest = m.name.partition("/")
            if top not in ("store", "repo") or not rest or m.issym() or m.islnk() or ".." in Path(rest).parts:
                raise SystemExit(f"{bundle}: unexpected member {m.name!r}")
            m.name = rest
            tar.extract(m, root if top == "store" else ROOT, filter="data")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", choices=["pack", "unpack"], default="pack")
    ap.add_argument("--recipe", default="recipes/gpu.yaml")
    ap.add_argument("--out", "--bundle", dest="bundle", default=".gpucarry/bundle.tar.gz")
    args = ap.parse_args()
    bundle = Path(args.bundle)
    if args.what == "unpack":
        unpack(args.recipe, bundle)
        print(f"{bundle}: unpacked into {store_root_of(args.recipe)} and {ROOT}")
        return 0
    files = pack(args.recipe, bundle)
    raw = sum(f.stat().st_size for f in files)
    print(f"{bundle}: {len(files)} files, {raw / 2**20:.1f} MiB raw, {bundle.stat().st_size / 2**20:.1f} MiB packed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
