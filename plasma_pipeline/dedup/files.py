"""`dedup_files`: the dedup on arbitrary Parquet / jsonl inputs, writing the survivors as Parquet."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence

import pyarrow.parquet as pq

from plasma_pipeline.dedup.config import DedupConfig
from plasma_pipeline.dedup.core import DedupResult, dedup_tables
from plasma_pipeline.dedup.io import expand_inputs, file_stem, load_shard

STATS_FILE = "dedup_stats.json"


def dedup_files(
    inputs: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    cfg: DedupConfig | None = None,
    stats: Counter | None = None,
) -> DedupResult:
    """Deduplicate Parquet/jsonl files (paths, globs or directories) as one corpus.

    Writes `<output_dir>/<stem>.parquet` with the surviving rows of each input (all columns, input order; ids and
    sources filled in where the input had none) and `<output_dir>/dedup_stats.json` (counters + metadata).
    """
    cfg = cfg or DedupConfig()
    stats = Counter() if stats is None else stats
    files = expand_inputs(inputs)
    stems = [file_stem(f) for f in files]
    out_names = _unique_names(stems)
    result = dedup_tables(files, cfg, stats)
    os.makedirs(output_dir, exist_ok=True)
    for i, (path, name) in enumerate(zip(files, out_names)):
        table = load_shard(path, cfg, i)
        kept = result.filter_table(i, table)
        tmp = os.path.join(output_dir, f".{name}.parquet.tmp")
        pq.write_table(kept, tmp)
        os.replace(tmp, os.path.join(output_dir, f"{name}.parquet"))
    report = {"inputs": files, "counters": dict(stats), "metadata": result.metadata}
    with open(os.path.join(output_dir, STATS_FILE), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    return result


def _unique_names(stems: list[str]) -> list[str]:
    seen: Counter = Counter()
    out = []
    for s in stems:
        out.append(s if not seen[s] else f"{s}-{seen[s]}")
        seen[s] += 1
    return out
