"""`dedup_files`: the dedup on arbitrary jsonl / Parquet / txt / html inputs, writing the survivors as Parquet."""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from plasma_pipeline.collect.reader import PartPool, ReadOptions, rebatch
from plasma_pipeline.dedup.config import DedupConfig
from plasma_pipeline.dedup.core import DedupResult, dedup_tables
from plasma_pipeline.dedup.io import FileShard, expand_inputs, file_shards, file_stem, load_shard, read_options
from plasma_pipeline.progress import bytes_docs_bar, part_bytes

STATS_FILE = "dedup_stats.json"
# Rows per row group of an output file; cut from the row sequence alone, so the bytes do not depend on how the
# inputs were split between workers.
ROW_GROUP_ROWS = 5_000


def dedup_files(
    inputs: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    cfg: DedupConfig | None = None,
    stats: Counter | None = None,
    on_error: str = "error",
    txt_unit: str = "file",
    opts: ReadOptions | None = None,
) -> DedupResult:
    """Deduplicate files (paths, globs or directories) as one corpus.

    Files are read by the shared streaming reader: a malformed line or non-UTF-8 bytes raise ValueError naming
    `file:line`, or with `on_error="skip"` are counted (dropped/malformed_line, dropped/non_utf8); empty files
    count empty_files. A big file is split into parts (line ranges, row groups) so `cfg.processes` workers
    share it; `metadata["workers_used"]` says how many did.

    Writes `<output_dir>/<stem>.parquet` with the surviving rows of each input (all columns, input order; jsonl
    gives id, text, source, url and meta, the JSON of every other field; ids and sources filled in where the
    input had none) and `<output_dir>/dedup_stats.json` (counters + metadata), each through a temporary file
    renamed into place.
    """
    cfg = cfg or DedupConfig()
    stats = Counter() if stats is None else stats
    opts = opts or read_options(cfg, on_error, txt_unit)
    files = expand_inputs(inputs)
    shards = file_shards(files, opts, cfg.processes)
    file_of = {f: i for i, f in enumerate(files)}
    out_names = _unique_names([file_stem(f) for f in files])
    sizes = [part_bytes(s.part) for s in shards]
    bar = bytes_docs_bar(sum(sizes), "dedup: signatures")
    try:
        result = dedup_tables(shards, cfg, stats, progress=lambda i, docs: bar.update_docs(docs, sizes[i]))
    finally:
        bar.close()

    # Second pass: each part's survivors, read in the workers, written per input file in input order.
    os.makedirs(output_dir, exist_ok=True)
    pool = PartPool(cfg.processes, len(shards))
    jobs = [(i, shard, result.keep_mask(i)) for i, shard in enumerate(shards)]
    read_stats: Counter = Counter({"files": len(files)})
    results = pool.imap(_survivors, jobs, cfg)
    tag = uuid.uuid4().hex[:8]
    by_file = itertools.groupby(zip(jobs, results), key=lambda jr: file_of[jr[0][1].part.path])

    bar = bytes_docs_bar(sum(sizes), "dedup: survivors")

    def kept_tables(group):
        for (i, _, mask), (kept, st) in group:
            bar.update_docs(len(mask), sizes[i])
            read_stats.update(st)
            yield kept

    for fi, group in by_file:
        tmp = os.path.join(output_dir, f".{out_names[fi]}.parquet.{tag}.tmp")
        try:
            _write_file(tmp, kept_tables(group))
            os.replace(tmp, os.path.join(output_dir, f"{out_names[fi]}.parquet"))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    bar.close()
    stats.update(read_stats)
    result.metadata["parts"] = len(shards)
    result.metadata["workers_used"] = pool.workers_used
    result.metadata["read"] = dict(sorted(read_stats.items()))
    report = {"inputs": files, "counters": dict(stats), "metadata": result.metadata}
    final = os.path.join(output_dir, STATS_FILE)
    tmp = f"{final}.{tag}.tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    os.replace(tmp, final)
    return result


def _survivors(job: tuple[int, FileShard, np.ndarray], cfg: DedupConfig) -> tuple[pa.Table, Counter]:
    """The surviving rows of one part, and what reading it counted (each part is counted in this pass only)."""
    index, shard, mask = job
    st: Counter = Counter()
    table = load_shard(shard, cfg, index, stats=st)
    if table.num_rows != len(mask):
        raise ValueError(f"shard {index} has {table.num_rows} rows, the dedup index saw {len(mask)}")
    return table.filter(pa.array(mask)), st


def _write_file(path: str, tables) -> None:
    """The tables as one Parquet file of ROW_GROUP_ROWS-row groups (an empty file keeps the schema)."""
    writer = None
    schema = None
    try:
        first = []
        for t in tables:
            if schema is None:
                schema = t.schema
            if t.num_rows:
                first.append(t)
                break
        rest = itertools.chain(first, (t for t in tables if t.num_rows))
        for chunk in rebatch(rest, ROW_GROUP_ROWS):
            if writer is None:
                writer = pq.ParquetWriter(path, chunk.schema)
            writer.write_table(chunk, row_group_size=ROW_GROUP_ROWS)
        if writer is None:
            pq.write_table((schema or pa.schema([])).empty_table(), path)
    finally:
        if writer is not None:
            writer.close()


def _unique_names(stems: list[str]) -> list[str]:
    seen: Counter = Counter()
    out = []
    for s in stems:
        out.append(s if not seen[s] else f"{s}-{seen[s]}")
        seen[s] += 1
    return out
