"""Stages 6-7 benchmark: tokenizer training (SentencePiece against HF `tokenizers`) and tokenise + pack throughput
of `build_token_shards` before and after the parallel rewrite, on the same input and cores.

    .venv/bin/python benchmarks/tokenize_bench.py                  # everything, 3 interleaved runs per mix variant
    .venv/bin/python benchmarks/tokenize_bench.py --repeats 5 --only mix

Input: a deduped-like corpus built once from the offline corpora under data/sources (scripts/fetch_sources.py):
every English wiki summary, every Wikibooks recipe, the CPython standard library, the ChatterBot dialogs and the
Gutenberg plays, through `plasma_pipeline.collect` (ids as the pipeline makes them), written as Parquet shards of
`--shard-rows` documents per domain under `--work` (about 23 M characters). The tokenizer is trained on it with
the streaming sampler (vocab `--vocab`, sample `--sample-chars`).

1. Tokenizer: the streaming sampler (texts spilled, sample streamed to a file that SentencePiece reads) against the
   previous in-memory one (commit BEFORE, loaded from git), each in its own process: seconds and peak RSS. Then
   SentencePiece BPE and HF `tokenizers` BPE trained on the same sample file with the same piece constraints
   (whitespace only as a prefix or alone, one Unicode script class per piece, single digits, byte fallback, the
   same special tokens and vocabulary size): training seconds, and bytes per token per domain on the same held-out
   documents (each encoded by its own library).
2. Encoder alone, one core (CPU seconds of this process): `sp.encode` against `SegmentEncoder` with an empty cache
   (every word seen for the first time costs SentencePiece work) and with a warm one (a second pass).
3. Mix: `build_token_shards` with the default MixConfig (seq_len 1024, 8192 rows per shard) but the default recipe's
   weights and `--total-tokens`: BEFORE's build.py (one process, 2 SentencePiece encode threads, the shipped
   behaviour), and the new one with processes=1 and processes=`--processes` (shard paths, workers read them). Each
   run is a fresh process (cold caches, pool start included), variants interleaved, best of `--repeats` (all runs
   shown), because the machine is shared. Writers compress every table to a zstd Parquet file, as the store does;
   the files' sha256 must be equal across variants. Tokens tokenised = train + val tokens of the input, BOS/EOS
   included (the same for every variant); tokens/s = that over wall seconds. CPU s = this process and its
   children (user + system). The cores CPU-bound processes actually get on the shared machine are probed before
   and after, so a parallel run can be read against them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BEFORE = "22d5e94"  # the commit whose mix/build.py and tokenizer/train.py are the "before" path
DOMAINS = ["code", "dialog", "literature", "recipes", "wiki"]
WEIGHTS = {"wiki": 0.4, "recipes": 0.2, "code": 0.2, "dialog": 0.05, "literature": 0.15}  # recipes/default.yaml


# --- input ---------------------------------------------------------------------------------------------------------


def build_corpus(work: Path, shard_rows: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from plasma_pipeline.collect.config import (
        CodeSourceConfig,
        DialogSourceConfig,
        LiteratureSourceConfig,
        RecipesSourceConfig,
        WikiSourceConfig,
    )
    from plasma_pipeline.collect.documents import doc_id
    from plasma_pipeline.collect.offline import iter_offline

    out = work / f"corpus-{shard_rows}"
    if (out / "done").exists():
        return out
    srcs = {"wiki": WikiSourceConfig(), "recipes": RecipesSourceConfig(), "code": CodeSourceConfig(),
            "dialog": DialogSourceConfig(), "literature": LiteratureSourceConfig()}
    for name, cfg in srcs.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        ids, texts = [], []
        for d in iter_offline(cfg, Counter()):
            ids.append(doc_id(name, d.locator))
            texts.append(d.text)
        for k, i in enumerate(range(0, len(ids), shard_rows)):
            t = pa.table({"id": ids[i : i + shard_rows], "text": texts[i : i + shard_rows]})
            pq.write_table(t, out / name / f"part-{k:05d}.parquet", compression="zstd")
    (out / "done").write_text("")
    return out


def shard_paths(corpus: Path, d: str) -> list[str]:
    return sorted(str(p) for p in (corpus / d).glob("part-*.parquet"))


def tables(corpus: Path, d: str):
    import pyarrow.parquet as pq

    for p in shard_paths(corpus, d):
        yield pq.read_table(p)


def before_module(rel: str, name: str) -> types.ModuleType:
    """`rel` as it was at commit BEFORE, as a module (its imports resolve against today's package)."""
    src = subprocess.run(["git", "show", f"{BEFORE}:{rel}"], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    exec(compile(src, f"{BEFORE}:{rel}", "exec"), mod.__dict__)
    return mod


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would carry the forking parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


# --- child runs (one fresh process each) ---------------------------------------------------------------------------


def child_tokenizer(args) -> dict:
    from plasma_pipeline.tokenizer import TokenizerConfig, train_tokenizer

    corpus = Path(args.corpus)
    cfg = TokenizerConfig(vocab_size=args.vocab, sample_chars=args.sample_chars)
    fn = before_module("plasma_pipeline/tokenizer/train.py", "before_train").train_tokenizer \
        if args.variant == "before" else train_tokenizer
    out = Path(args.out)
    t0, c0 = time.perf_counter(), cpu_seconds()
    meta = fn({d: tables(corpus, d) for d in DOMAINS}, cfg, out, Counter())
    wall = time.perf_counter() - t0
    return {"wall": wall, "cpu": cpu_seconds() - c0, "peak_rss_mb": peak_rss_mb(),
            "train_seconds": meta["train_seconds"], "bytes_per_token": meta["bytes_per_token"],
            "model_sha256": hashlib.sha256((out / "tokenizer.model").read_bytes()).hexdigest()}


def child_mix(args) -> dict:
    import pyarrow.parquet as pq

    from plasma_pipeline.mix import MixConfig, build_token_shards

    corpus = Path(args.corpus)
    cfg = MixConfig(weights=WEIGHTS, total_tokens=args.total_tokens)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    def writer(split):
        def write(table):
            p = out / f"{split}-{len(files):05d}.parquet"
            pq.write_table(table, p, compression="zstd")
            files.append(p)
        return write

    if args.variant == "before":
        fn = before_module("plasma_pipeline/mix/build.py", "before_build").build_token_shards
        src, kw = {d: (lambda d=d: tables(corpus, d)) for d in DOMAINS}, {}
    else:
        fn = build_token_shards
        src = {d: (lambda d=d: shard_paths(corpus, d)) for d in DOMAINS}
        kw = {"processes": args.processes}
    t0, c0 = time.perf_counter(), cpu_seconds()
    meta = fn(src, args.tokenizer, cfg, writer("train"), writer("val"), Counter(), work_dir=out, **kw)
    wall = time.perf_counter() - t0
    h = hashlib.sha256()
    for p in files:
        h.update(p.read_bytes())
    shutil.rmtree(out, ignore_errors=True)
    tokenised = sum(m["available_tokens"] + m["val_tokens"] + m["val_tail_tokens_dropped"]
                    for m in meta["domains"].values())
    written = meta["total_tokens_achieved"] + meta["pad_tokens"] + sum(meta["val_tokens_per_domain"].values())
    return {"wall": wall, "cpu": cpu_seconds() - c0, "tokenised": tokenised, "written": written,
            "peak_rss_mb": peak_rss_mb(), "sha256": h.hexdigest()}


def run_child(kind: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--_child", kind] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"child {kind} {kw} failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --- sections ------------------------------------------------------------------------------------------------------


def section_tokenizer(args, corpus: Path, work: Path) -> Path:
    print(f"\n## 1. Tokenizer training (vocab {args.vocab}, sample_chars {args.sample_chars:,})\n")
    runs = {}
    for variant in ("before", "after"):
        runs[variant] = run_child("tokenizer", variant=variant, corpus=corpus, vocab=args.vocab,
                                  sample_chars=args.sample_chars, out=work / f"tok-{variant}")
    print("| sampler | wall s | CPU s | SentencePiece train s | peak RSS MB |")
    print("|---|---|---|---|---|")
    for v, r in runs.items():
        name = "before: texts in memory, sentence_iterator" if v == "before" else "after: spilled texts, sample file"
        print(f"| {name} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['train_seconds']:.2f} | {r['peak_rss_mb']:.0f} |")
    # Python heap of the sampling pass alone (tracemalloc), all domains: the texts kept vs their offsets
    import tracemalloc

    from plasma_pipeline.tokenizer import TokenizerConfig
    from plasma_pipeline.tokenizer.train import _domain_budgets, _sample_domain

    cfg = TokenizerConfig(vocab_size=args.vocab, sample_chars=args.sample_chars)
    budgets = _domain_budgets(DOMAINS, cfg)
    old = before_module("plasma_pipeline/tokenizer/train.py", "before_train")
    peaks = {}
    for v in ("before", "after"):
        spill = Path(tempfile.mkdtemp(dir=work))
        tracemalloc.start()
        kept = []
        for d in DOMAINS:
            if v == "before":
                kept.append(old._sample_domain(tables(corpus, d), budgets[d], cfg.eval_chars_per_domain, 0, d,
                                               Counter()))
            else:
                kept.append(_sample_domain(tables(corpus, d), budgets[d], cfg.eval_chars_per_domain, 0, d,
                                           Counter(), spill))
        peaks[v] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        shutil.rmtree(spill, ignore_errors=True)
    print(f"\nPython heap peak of the sampling pass (tracemalloc, the kept sample is {args.sample_chars / 1e6:.0f} M "
          f"characters at most): before {peaks['before']:.1f} MB, after {peaks['after']:.1f} MB.")
    same = runs["before"]["bytes_per_token"] == runs["after"]["bytes_per_token"]
    print(f"\nSame held-out bytes/token per domain before and after: {same} (the pieces are the same; the model "
          "file differs only in the training paths it records, which are now pinned).")
    compare_libraries(args, corpus, work)
    return work / "tok-after" / "tokenizer.model"


def compare_libraries(args, corpus: Path, work: Path) -> None:
    import sentencepiece as spm
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    from plasma_pipeline.schema import CHAT_SPECIAL_TOKENS
    from plasma_pipeline.tokenizer import TokenizerConfig
    from plasma_pipeline.tokenizer.train import _domain_budgets, _sample_domain, _write_sample

    cfg = TokenizerConfig(vocab_size=args.vocab, sample_chars=args.sample_chars)
    budgets = _domain_budgets(DOMAINS, cfg)
    spill = Path(tempfile.mkdtemp(dir=work))
    samples, held = [], {}
    for d in DOMAINS:
        tr, ev = _sample_domain(tables(corpus, d), budgets[d], cfg.eval_chars_per_domain, cfg.seed, d, Counter(), spill)
        samples.append(tr)
        held[d] = list(ev.texts())
    sample = spill / "sample.txt"
    lines, nbytes = _write_sample(samples, sample, cfg.max_sentence_length)

    t0 = time.perf_counter()
    spm.SentencePieceTrainer.train(
        input=str(sample), model_prefix=str(spill / "sp"), model_type="bpe", vocab_size=cfg.vocab_size,
        character_coverage=cfg.character_coverage, byte_fallback=True, split_digits=True, pad_id=0, unk_id=1,
        bos_id=2, eos_id=3, user_defined_symbols=list(CHAT_SPECIAL_TOKENS), normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, max_sentence_length=cfg.max_sentence_length,
        input_sentence_size=lines, shuffle_input_sentence=False, num_threads=cfg.num_threads,
        hard_vocab_limit=False, minloglevel=2)
    t_sp = time.perf_counter() - t0
    sp = spm.SentencePieceProcessor(model_file=str(spill / "sp.model"))

    # HF BPE with SentencePiece's piece constraints: spaces as U+2581 (a dummy one first), a piece is a run of
    # spaces, one optional leading space + letters or + other symbols, or one digit alone; byte fallback pieces.
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Split(
        Regex(r"▁+(?=▁)|▁?\p{L}+|\p{N}|▁?[^\p{L}\p{N}▁\n]+|▁+|\n+"), behavior="isolated")
    special = ["<pad>", "<unk>", "<s>", "</s>", *CHAT_SPECIAL_TOKENS]
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size - 256, special_tokens=special, max_token_length=16,
                                  show_progress=False, limit_alphabet=1000)
    t0 = time.perf_counter()
    tok.train([str(sample)], trainer)
    t_hf = time.perf_counter() - t0
    tok.add_tokens([f"<0x{i:02X}>" for i in range(256)])

    print(f"\nSentencePiece {spm.__version__} vs tokenizers {__import__('tokenizers').__version__}, same sample file "
          f"({lines:,} lines, {nbytes / 1e6:.1f} MB), vocab {cfg.vocab_size} (SentencePiece {sp.get_piece_size()}, "
          f"tokenizers {tok.get_vocab_size()}), {cfg.num_threads} threads where the library takes a count:\n")
    print("| | SentencePiece BPE | HF tokenizers BPE | tokenizers / SentencePiece |")
    print("|---|---|---|---|")
    print(f"| training s | {t_sp:.2f} | {t_hf:.2f} | {t_hf / t_sp:.2f}× |")
    for d in DOMAINS:
        nb = sum(len(x.encode()) for x in held[d])
        a = nb / sum(map(len, sp.encode(held[d])))
        b = nb / sum(len(e.ids) for e in tok.encode_batch(held[d]))
        print(f"| bytes/token, {d} ({len(held[d])} held-out docs) | {a:.4f} | {b:.4f} | {b / a - 1:+.2%} |")
    print("\nRule: use the faster unless bytes/token differ by more than ~2%. SentencePiece trains faster and the "
          "quality is within 2%, so training stays on SentencePiece (no conversion of the model needed).")


def section_encoder(tok_path: Path, corpus: Path) -> None:
    import numpy as np
    import pyarrow.parquet as pq

    from plasma_pipeline.tokenizer.encode import SegmentEncoder

    arrays = [pq.read_table(p).column("text") for d in DOMAINS for p in shard_paths(corpus, d)]
    lists = [a.to_pylist() for a in arrays]
    enc = SegmentEncoder(tok_path)
    sp = enc.sp
    c0 = time.process_time()
    ref = [sp.encode(t, return_type="numpy", num_threads=1) for t in lists]
    c1 = time.process_time()
    cold = [enc.encode(a) for a in arrays]
    c2 = time.process_time()
    for a in arrays:
        enc.encode(a)
    c3 = time.process_time()
    n = sum(len(x) for r in ref for x in r)
    exact = all(np.array_equal(np.concatenate(r), t) for r, (t, _) in zip(ref, cold))
    print(f"\n## 2. Encoder alone, one core ({n / 1e6:.2f} M tokens, {len(arrays)} tables)\n")
    print("| encoder | CPU s | M tokens / CPU s |")
    print("|---|---|---|")
    for name, s in (("sp.encode (1 thread)", c1 - c0), ("SegmentEncoder, empty cache", c2 - c1),
                    ("SegmentEncoder, warm cache", c3 - c2)):
        print(f"| {name} | {s:.2f} | {n / s / 1e6:.2f} |")
    st = enc.stats
    print(f"\nIdentical to sp.encode: {exact}. First pass: {st['new_parts']:,} of {st['parts'] // 2:,} parts are new "
          "and go to SentencePiece (newline-joined batches); the rest are cache hits.")


def _spin(n: int = 6_000_000) -> float:
    t = time.process_time()
    x = 0
    for i in range(n):
        x += i * i
    return time.process_time() - t


def parallel_capacity(processes: int) -> float:
    """How many cores `processes` CPU-bound Python processes got together, right now (the machine is shared)."""
    import multiprocessing as mp

    one = _spin()
    with mp.get_context("spawn").Pool(processes) as pool:
        pool.map(_spin, [1000] * processes)  # started
        t = time.perf_counter()
        pool.map(_spin, [6_000_000] * processes)
        wall = time.perf_counter() - t
    return processes * one / wall


def section_mix(args, tok_path: Path, corpus: Path, work: Path) -> None:
    variants = [("before", 1), ("after", 1), ("after", args.processes)]
    cap_before = parallel_capacity(args.processes)
    runs: dict[tuple, list[dict]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v in variants:
            runs[v].append(run_child("mix", variant=v[0], processes=v[1], corpus=corpus, tokenizer=tok_path,
                                     total_tokens=args.total_tokens, out=tempfile.mkdtemp(dir=work)))
    r0 = runs[variants[0]][0]
    print(f"\n## 3. Tokenise + pack: build_token_shards ({r0['tokenised'] / 1e6:.2f} M tokens tokenised, "
          f"{r0['written'] / 1e6:.2f} M written, total_tokens {args.total_tokens:,}), best of {args.repeats}\n")
    print("| variant | best wall s (all runs) | CPU s (best run) | M tokens tokenised / s | vs before | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    best0 = min(r["wall"] for r in runs[variants[0]])
    for v in variants:
        rs = runs[v]
        b = min(rs, key=lambda r: r["wall"])
        name = f"before ({BEFORE}: 1 process, 2 encode threads)" if v[0] == "before" else f"after, processes={v[1]}"
        walls = ", ".join(f"{r['wall']:.2f}" for r in rs)
        print(f"| {name} | {b['wall']:.2f} ({walls}) | {b['cpu']:.2f} | "
              f"{b['tokenised'] / b['wall'] / 1e6:.2f} | {best0 / b['wall']:.2f}× | {b['peak_rss_mb']:.0f} |")
    print(f"\nCores free to {args.processes} CPU-bound processes (shared machine), before / after the runs: "
          f"{cap_before:.2f} / {parallel_capacity(args.processes):.2f} (2.00 = both cores). Peak RSS is the "
          "parent process's (the workers' is not included).")
    hashes = {r["sha256"] for rs in runs.values() for r in rs}
    med = {v: statistics.median(r["wall"] for r in rs) for v, rs in runs.items()}
    print(f"\nMedian wall: " + ", ".join(f"{v[0]} p={v[1]} {m:.2f}s" for v, m in med.items()))
    print(f"Output shards byte-identical across all variants and runs: {len(hashes) == 1} ({len(hashes)} distinct)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "plasma-tokenize-bench"))
    p.add_argument("--shard-rows", type=int, default=500)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--sample-chars", type=int, default=20_000_000)  # TokenizerConfig's default
    p.add_argument("--total-tokens", type=int, default=6_000_000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", choices=["tokenizer", "encoder", "mix"])
    # child-process arguments
    p.add_argument("--_child", help=argparse.SUPPRESS)
    for a in ("variant", "corpus", "out", "tokenizer"):
        p.add_argument(f"--{a}", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        res = child_tokenizer(args) if args._child == "tokenizer" else child_mix(args)
        print(json.dumps(res))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(work, args.shard_rows)
    n_docs = sum(len(shard_paths(corpus, d)) for d in DOMAINS)
    print(f"# tokenize_bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, corpus {corpus} "
          f"({n_docs} shards of ≤ {args.shard_rows} docs)")
    tok = work / "tok-after" / "tokenizer.model"
    if args.only in (None, "tokenizer") or not tok.exists():
        tok = section_tokenizer(args, corpus, work)
    if args.only in (None, "encoder"):
        section_encoder(tok, corpus)
    if args.only in (None, "mix"):
        section_mix(args, tok, corpus, work)


if __name__ == "__main__":
    main()
