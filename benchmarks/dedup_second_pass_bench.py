"""The dedup's second pass at a scale of benchmarks/scale_bench.py: the parent-side loop it replaced (read each
scored shard again, keep mask, eval hold-out, `VersionWriter.write` in this process) against the shard workers
writing their own shards (`dedup.survivors`), on one `dedup_tables` result over the scale store's current scored
versions. Each run publishes into a throwaway store; the kept ids per split, counters and hold-out summary of
every run must be identical. Prints wall, CPU of the tree and CPU of this process per run.

    flock /tmp/plasma-bench.lock .venv/bin/python benchmarks/dedup_second_pass_bench.py --scale 10 \\
        --runs parent,workers,parent,workers
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def main() -> None:
    import pyarrow.parquet as pq

    from plasma_pipeline.dedup.core import dedup_tables
    from plasma_pipeline.dedup.survivors import adopt_survivors, survivor_workers, write_survivors
    from plasma_pipeline.instruct.holdout import Holdout
    from plasma_pipeline.recipe import load_recipe
    from plasma_pipeline.shards import ShardStore, StoreConfig, read_shard

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--runs", default="parent,workers,parent,workers")
    args = ap.parse_args()

    recipe = load_recipe(f"data/scale/{args.scale}x/recipe.yaml")
    src = ShardStore(recipe.store)
    owned = [(s, str(p)) for s in recipe.sources for p in src.current(f"scored/{s}").shards()]
    t = time.perf_counter()
    result = dedup_tables([p for _, p in owned], recipe.dedup, Counter())
    print(f"dedup_tables {time.perf_counter() - t:.1f} s: {len(owned)} shards, {len(result.keep):,} docs", flush=True)
    out = Path(tempfile.mkdtemp(prefix="plasma-pass2-"))
    cfg = StoreConfig(root=str(out), max_rows_per_shard=recipe.store.max_rows_per_shard,
                      row_group_rows=recipe.store.row_group_rows)
    store = ShardStore(cfg)
    first = None
    try:
        for k, mode in enumerate(args.runs.split(",")):
            holdout = Holdout.from_recipe(recipe.instructions, recipe.dedup)
            load = os.getloadavg()[0]
            w0, tree0, self0 = time.perf_counter(), _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN), \
                _cpu(resource.RUSAGE_SELF)
            with store.writer(f"deduped-{k}") as w, store.scratch(f"deduped-{k}") as work:
                if mode == "parent":
                    workers = 1
                    for i, (source, path) in enumerate(owned):
                        w.write(holdout.filter(result.filter_table(i, read_shard(Path(path))), source, w.stats),
                                split=source)
                else:
                    workers = survivor_workers([p for _, p in owned], result, recipe.dedup)
                    adopt_survivors(w, write_survivors(owned, result, holdout, work / "survivors", workers,
                                                       cfg.max_rows_per_shard, cfg.row_group_rows))
                w.metadata["eval_holdout"] = holdout.summary()
                v = w.publish()
            wall = time.perf_counter() - w0
            tree = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN) - tree0
            own = _cpu(resource.RUSAGE_SELF) - self0
            ids: dict[str, list[str]] = {}
            for e in v.manifest["shards"]:
                ids.setdefault(e["split"], []).extend(pq.read_table(v.path / e["path"], columns=["id"])["id"].to_pylist())
            got = (ids, v.manifest["stats"], v.manifest["metadata"]["eval_holdout"])
            first = first or got
            same = "same" if got == first else "DIFFERENT"
            print(f"{mode} #{k}: {workers} worker(s), wall {wall:.1f} s, CPU {tree:.1f} s (this process {own:.1f} s), "
                  f"load {load:.1f}, {v.rows:,} rows in {len(v.manifest['shards'])} shards; ids/stats/hold-out {same}",
                  flush=True)
            shutil.rmtree(v.path.parent.parent)
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
