"""Stage 2 benchmark: `clean_table` against datatrove's equivalent filters, same documents, same process, one core.

    .venv/bin/python benchmarks/clean_bench.py                      # the default recipe's sources
    .venv/bin/python benchmarks/clean_bench.py --repeats 3 --max-docs 2000

Documents come from the recipe's sources through `plasma_pipeline.collect` (the offline default corpus: wiki
en+fr+es, recipes, stdlib sample, dialogs, Shakespeare). Each source is cleaned with its own recipe slice
(`sources.<name>.clean`). datatrove runs, on the same documents, LanguageFilter (lid.176 from the same .ftz file)
→ GopherRepetitionFilter → GopherQualityFilter → C4QualityFilter → FineWebQualityFilter, with the thresholds set
to the same values (min words, languages, language threshold). datatrove has no code filters, so code-profile
sources are timed for plasma only and left out of the ratio.

Timing is CPU time of this process (`time.process_time`), which stays meaningful on a machine shared with other
work; wall time is printed beside it. Both pipelines run single-threaded, alternating, best of `--repeats`.
MB are UTF-8 megabytes of input text.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
    os.environ.setdefault(_var, "1")

import pyarrow as pa
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plasma_pipeline.clean import CleanConfig, clean_table
from plasma_pipeline.clean.langid import lid_model_path


def load_sources(recipe: Path, only: list[str] | None, max_docs: int | None) -> list[tuple[str, CleanConfig, pa.Table]]:
    from plasma_pipeline.collect import build_source_config, iter_documents

    raw = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    out = []
    for name, spec in raw["sources"].items():
        if only and name not in only:
            continue
        cfg = CleanConfig(**(spec.get("clean") or {}))
        collect_cfg = build_source_config({k: v for k, v in spec.items() if k not in ("clean", "score")})
        tables = list(iter_documents(name, collect_cfg, Counter()))
        table = pa.concat_tables(tables) if tables else None
        if table is None or table.num_rows == 0:
            raise SystemExit(f"source {name!r} yielded no documents; run scripts/fetch_sources.py first")
        if max_docs is not None:
            table = table.slice(0, max_docs)
        out.append((name, cfg, table))
    return out


def run_plasma(table: pa.Table, cfg: CleanConfig, stats: Counter[str] | None = None) -> tuple[float, float, int]:
    stats = Counter() if stats is None else stats
    c0, w0 = time.process_time(), time.perf_counter()
    out = clean_table(table, cfg, stats)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    assert stats["kept"] == out.num_rows
    return cpu, wall, out.num_rows


def _allow_any_fasttext_build() -> None:
    """datatrove insists on the `fasttext-numpy2-wheel` distribution; any build whose `fasttext` module loads and
    predicts under numpy 2 (the venv may carry another one, e.g. fasttext-community) does the same job."""
    import datatrove.utils._import_utils as iu

    original = iu._is_distribution_available
    iu._is_distribution_available = lambda name: name == "fasttext-numpy2-wheel" or original(name)


def make_datatrove_pipeline(cfg: CleanConfig) -> list:
    _allow_any_fasttext_build()
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
    )
    from fasttext.FastText import _FastText

    lang = LanguageFilter(languages=list(cfg.languages) or None, language_threshold=cfg.min_lang_score)
    lang.model._model = _FastText(str(lid_model_path()))  # the same offline .ftz, not a download
    return [
        lang,
        GopherRepetitionFilter(),
        GopherQualityFilter(min_doc_words=cfg.min_words, max_doc_words=cfg.max_words),
        C4QualityFilter(),
        FineWebQualityFilter(),
    ]


def run_datatrove(table: pa.Table, cfg: CleanConfig) -> tuple[float, float, int]:
    from datatrove.data import Document

    steps = make_datatrove_pipeline(cfg)
    ids, texts = table.column("id").to_pylist(), table.column("text").to_pylist()
    c0, w0 = time.process_time(), time.perf_counter()
    docs = (Document(text=t, id=i) for i, t in zip(ids, texts))
    for step in steps:
        docs = step.run(docs)
    kept = sum(1 for _ in docs)
    return time.process_time() - c0, time.perf_counter() - w0, kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "default.yaml")
    ap.add_argument("--sources", nargs="*", help="only these sources (default: all in the recipe)")
    ap.add_argument("--max-docs", type=int, default=None, help="first N documents of each source")
    ap.add_argument("--repeats", type=int, default=1, help="best of N alternating runs")
    ap.add_argument("--no-datatrove", action="store_true")
    ap.add_argument("--stats", action="store_true", help="print plasma's non-zero drop counters per source")
    args = ap.parse_args()

    try:
        import datatrove  # noqa: F401

        have_dt = not args.no_datatrove
    except ImportError:
        have_dt = False
        print("datatrove is not installed: timing plasma only")

    sources = load_sources(args.recipe, args.sources, args.max_docs)
    # Warm-up outside the timed region: fastText model load, spaCy tokenizer build.
    warm = sources[0][2].slice(0, 50)
    run_plasma(warm, sources[0][1])
    prose_cfg = next((c for _, c, _ in sources if c.profile == "prose"), None)
    if have_dt and prose_cfg is not None:
        run_datatrove(warm, prose_cfg)

    print(f"# clean benchmark  {time.strftime('%Y-%m-%d')}  {platform.machine()}  {os.cpu_count()} cpus  "
          f"python {platform.python_version()}  single process, CPU seconds, best of {args.repeats}")
    hdr = f"{'source':<11}{'profile':<8}{'docs':>7}{'MB':>7} | {'plasma docs/s':>13}{'MB/s':>7}{'kept':>7}"
    if have_dt:
        hdr += f" | {'datatrove docs/s':>16}{'MB/s':>7}{'kept':>7} | {'ratio':>6}"
    print(hdr)
    print("-" * len(hdr))
    tot = Counter()
    for name, cfg, table in sources:
        mb = sum(len(t.encode("utf-8")) for t in table.column("text").to_pylist()) / 1e6
        n = table.num_rows
        best_p = best_d = None
        stats: Counter[str] = Counter()
        for _ in range(args.repeats):
            stats.clear()
            p = run_plasma(table, cfg, stats)
            best_p = p if best_p is None or p[0] < best_p[0] else best_p
            if have_dt and cfg.profile == "prose":
                d = run_datatrove(table, cfg)
                best_d = d if best_d is None or d[0] < best_d[0] else best_d
        line = f"{name:<11}{cfg.profile:<8}{n:>7}{mb:>7.2f} | {n / best_p[0]:>13.0f}{mb / best_p[0]:>7.2f}{best_p[2]:>7}"
        if best_d is not None:
            line += f" | {n / best_d[0]:>16.0f}{mb / best_d[0]:>7.2f}{best_d[2]:>7} | {best_d[0] / best_p[0]:>5.1f}x"
            tot.update(docs=n, mb=mb, p_cpu=best_p[0], d_cpu=best_d[0], p_kept=best_p[2], d_kept=best_d[2])
        elif have_dt:
            line += f" | {'(no code filters)':>30} |"
        print(line)
        if args.stats:
            drops = sorted(((v, k) for k, v in stats.items() if k.startswith(("dropped/", "modified/")) and v), reverse=True)
            print("    " + ", ".join(f"{k.split('/', 1)[1]}={v}" for v, k in drops))
    if tot:
        print("-" * len(hdr))
        print(
            f"{'prose all':<19}{tot['docs']:>7}{tot['mb']:>7.2f} | {tot['docs'] / tot['p_cpu']:>13.0f}"
            f"{tot['mb'] / tot['p_cpu']:>7.2f}{tot['p_kept']:>7} | {tot['docs'] / tot['d_cpu']:>16.0f}"
            f"{tot['mb'] / tot['d_cpu']:>7.2f}{tot['d_kept']:>7} | {tot['d_cpu'] / tot['p_cpu']:>5.1f}x"
        )
        print(f"plasma {tot['p_cpu']:.2f} CPU s vs datatrove {tot['d_cpu']:.2f} CPU s on the same prose documents")


if __name__ == "__main__":
    main()
