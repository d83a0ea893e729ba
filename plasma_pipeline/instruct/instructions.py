"""Stage 9 `instructions`: templated instructions from the structured sources plus chat datasets, decontaminated.

Two entry points, both returning INSTRUCTION_SCHEMA tables:
- `instructions_from_docs(table, source, cfg, stats)`: one DOC shard of a collected source, in a worker process
  (no cap, no cross-shard dedup: the caller concatenates and may cap).
- `build_instructions(cfg, stats, doc_tables=None)`: the whole stage in one process: each generator reads the
  DOC tables of the sources that feed it (cfg.source_domains) or, when none are given, the offline files; then
  the chat datasets; held-out eval items are skipped, duplicates and contaminated rows dropped, each generator
  and dataset capped at max_per_generator.

The pipeline passes the `deduped` asset's per-source splits as `doc_tables`, with `file_fallback=False`: SFT
data then comes only from documents that passed cleaning, toxicity / quality scoring, dedup and the eval
hold-out (`holdout.py`). The generators' structured fields survive those stages: cleaning rewrites `text` but
carries `meta` (wiki / recipe titles, ingredients, steps, dialog turns, code file paths) unchanged, and dedup
keeps whole rows; wiki extracts and code are read from the cleaned text.

Counters: kept, kept/<generator or dataset>, heldout/<generator> (items reserved for the eval battery),
dropped/decontaminated (+ /<source>), dropped/duplicate, dropped/bad_messages, capped/<name> (the cap was hit),
the source readers' skipped/<reason>; where instructions come from: input/<input_name> (+ /<source>: documents
read from doc_tables), from_source/<source> (instructions kept from that source's documents),
from_offline_files/<generator> (kept from the offline files, which no filter has seen),
skipped/no_source/<generator> (the generator is on, no given source feeds it and file_fallback is off).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa

from plasma_pipeline.instruct.config import InstructionsConfig
from plasma_pipeline.instruct.decontaminate import EvalIndex, decontaminate_table
from plasma_pipeline.instruct.eval_prompts import eval_prompts, is_heldout
from plasma_pipeline.instruct.generators import GENERATOR_FUNCS, to_table
from plasma_pipeline.instruct.loaders import iter_messages_dataset
from plasma_pipeline.instruct.sources import iter_doc_items, iter_file_items

_INDEX_CACHE: dict[tuple, EvalIndex] = {}


def eval_index(cfg: InstructionsConfig) -> EvalIndex:
    """The decontamination index of the eval battery, built once per process."""
    sizes = {"n_long": cfg.decontam_ngram, "n_short": cfg.decontam_short_ngram,
             "long_min_words": cfg.decontam_long_min_words, "min_words": cfg.decontam_min_words}
    key = (cfg.sources_root, cfg.eval_per_domain, *sorted(sizes.items()))
    if key not in _INDEX_CACHE:
        prompts = eval_prompts(cfg.sources_root, per_domain=cfg.eval_per_domain)
        _INDEX_CACHE[key] = EvalIndex.build(prompts, **sizes)
    return _INDEX_CACHE[key]


def _records(items: Iterable[dict[str, Any]], generator: str, cfg: InstructionsConfig,
             stats: Counter) -> Iterator[dict[str, Any]]:
    make = GENERATOR_FUNCS[generator]
    for item in items:
        if is_heldout(item):
            stats[f"heldout/{generator}"] += 1
            continue
        yield make(item, cfg.seed)


def instructions_from_docs(table: pa.Table, source: str, cfg: InstructionsConfig, stats: Counter,
                           index: EvalIndex | None = None) -> pa.Table:
    """Instructions from one DOC shard of `source` (empty table when the source feeds no generator)."""
    generator = cfg.domain_of(source)
    if generator is None or generator not in cfg.generators:
        return to_table([])
    out = to_table(list(_records(iter_doc_items(table, generator, stats), generator, cfg, stats)))
    out = decontaminate_table(out, index or eval_index(cfg), stats)
    stats["kept"] += out.num_rows
    stats[f"kept/{generator}"] += out.num_rows
    return out


def build_instructions(cfg: InstructionsConfig, stats: Counter,
                       doc_tables: Mapping[str, Iterable[pa.Table]] | None = None, *,
                       input_name: str = "docs", file_fallback: bool = True) -> Iterator[pa.Table]:
    """The whole stage: yields INSTRUCTION_SCHEMA tables of at most cfg.batch_size rows.

    A generator fed by none of `doc_tables`' sources reads the offline files when `file_fallback` (always when
    doc_tables is None), and produces nothing otherwise."""
    index = eval_index(cfg)
    seen: set[str] = set()
    buf: list[dict[str, Any]] = []

    def counted(source: str, tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
        for t in tables:
            stats[f"input/{input_name}"] += t.num_rows
            stats[f"input/{input_name}/{source}"] += t.num_rows
            yield t

    def from_docs(gen: str, fed_by: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        for s in fed_by:
            for t in counted(s, doc_tables[s]):
                for rec in _records(iter_doc_items(t, gen, stats), gen, cfg, stats):
                    yield f"from_source/{s}", rec

    def from_files(gen: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for rec in _records(iter_file_items(gen, cfg.sources_root, stats), gen, cfg, stats):
            yield f"from_offline_files/{gen}", rec

    def streams() -> Iterator[tuple[str, Iterator[tuple[str | None, dict[str, Any]]]]]:
        for gen in cfg.generators:
            fed_by = [s for s in (doc_tables or {}) if cfg.domain_of(s) == gen]
            if fed_by:
                yield gen, from_docs(gen, fed_by)
            elif doc_tables is None or file_fallback:
                yield gen, from_files(gen)
            else:
                stats[f"skipped/no_source/{gen}"] += 1
        for spec in cfg.dataset_configs():
            yield spec.name, ((None, rec) for rec in iter_messages_dataset(spec, stats))

    for name, records in streams():
        kept = 0
        for origin, rec in records:
            if cfg.max_per_generator is not None and kept >= cfg.max_per_generator:
                stats[f"capped/{name}"] += 1
                break
            if rec["id"] in seen:
                stats["dropped/duplicate"] += 1
                continue
            if index.contaminated(rec["messages"]):
                stats["dropped/decontaminated"] += 1
                stats[f"dropped/decontaminated/{name}"] += 1
                continue
            seen.add(rec["id"])
            kept += 1
            if origin:
                stats[origin] += 1
            buf.append(rec)
            if len(buf) >= cfg.batch_size:
                yield to_table(buf)
                buf = []
        stats["kept"] += kept
        stats[f"kept/{name}"] += kept
    if buf:
        yield to_table(buf)
