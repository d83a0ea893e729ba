"""Stage 7: domain-weighted mixing with exact token budgets, packed into train / val token shards.

Each domain's input is read once (`domain_doc_iters[d]()` is called once), in two passes:

1. Tokenise every document once. Each input table (or Parquet shard path, which the worker reads itself) is
   cut into row slices of about 1 MB of text, and each slice is a task for a worker process (`processes`,
   through `shard_work.ordered_pool`): it encodes its documents in one batch (`SegmentEncoder`, token for token
   `sp.encode`) and writes their `[BOS] doc [EOS]` tokens to its own spill file (raw uint16 while the vocabulary
   fits, else int32: train documents, then val documents). A document whose seeded id hash falls under
   `val_fraction` goes to val (before any budget is allocated, so no document is in both splits). The parent
   keeps only per-document lengths, offsets and id hashes, and joins the slices of a table back into one part.
   Val documents are packed per domain, in input order, so every val row is one domain; a domain whose
   documents all miss val_fraction still holds out its lowest-hash one (moved from its spill part, nothing is
   tokenised twice).
2. `plan_mix` turns the available tokens into exact budgets. Each domain's chunk sequence is computed in numpy:
   full epochs take every document; the last, partial epoch takes the documents with the lowest seeded key for
   that epoch (splitmix64 of id hash and epoch) until the budget is met, the boundary document truncated so the
   domain gets exactly its budget. Every epoch visits the input tables (spill parts, however a table was
   sliced), and the documents inside them, in a fresh seeded order. A stride scheduler interleaves the domains in
   proportion to their budgets: the next chunk is always the domain's that is furthest behind its share (ties:
   first domain by name), which is a sort of all chunks by (tokens the domain placed before the chunk / its
   budget, domain). The chunks are packed into rows of seq_len + 1 tokens; each `rows_per_shard` rows are
   gathered from the spill files (memory-mapped) by one task and shuffled with a seeded permutation; the tasks
   run in the worker processes when there are several shards of at least _POOL_PACK_TOKENS in all (below that
   a pool costs more to start than packing, ~20 ns a token, takes).

The output does not depend on `processes`: every task is a pure function of its input and results are used in
input order; it is byte for byte that of the previous one-process implementation (commit 22d5e94, which
benchmarks/tokenize_bench.py runs beside this one and compares). Row domain label: the domain holding the majority of the row's tokens (ties: first domain by name).
The train budget counts every token placed, BOS and EOS included; the last incomplete train row is padded with
pad id 0 (reported as `pad_tokens`; targets equal to pad should be ignored by the trainer). Incomplete last val
rows are dropped per domain (reported as `val_tail_tokens_dropped`), so val holds no padding.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plasma_pipeline.mix.config import MixConfig
from plasma_pipeline.mix.pack import rows_to_table
from plasma_pipeline.mix.plan import DomainPlan, plan_mix
from plasma_pipeline.tokenizer import BOS_ID, EOS_ID, PAD_ID, doc_hash, load_tokenizer
from plasma_pipeline.tokenizer.encode import arrow_ints, numpy_ints

Writer = Callable[[pa.Table], None]
Source = pa.Table | str | os.PathLike  # a document table (id, text) or the path of a Parquet shard holding one
_U64 = float(2**64)
_TOKEN = np.int32
_SPILL_DTYPES = {".u16": np.uint16, ".i32": np.int32}  # spill files: 2 bytes a token while the vocab fits


def _spill_dtype(path: str) -> type:
    return _SPILL_DTYPES[os.path.splitext(path)[1]]


def _doc_key(doc_id: str, cfg: MixConfig) -> int:
    return doc_hash(cfg.seed, "val", doc_id)


def is_val_doc(doc_id: str, cfg: MixConfig) -> bool:
    """Whether a document is held out for val: its seeded id hash falls under val_fraction (any domain)."""
    return _doc_key(doc_id, cfg) < cfg.val_fraction * _U64


def _mix64(keys: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64 of keys xor salt: a fresh, vectorised pseudo-random order key per (document, epoch)."""
    with np.errstate(over="ignore"):
        z = keys ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _map(func: Callable, items: Iterable[tuple], processes: int) -> Iterator:
    """func(*item) in input order through the executor every stage's shard work uses (processes <= 1 locally:
    inline and lazily). Local workers start with one BLAS thread each: they do no linear algebra, and numpy's
    OpenBLAS otherwise starts a thread per core in every worker at import (~0.1 s of CPU each)."""
    from plasma_pipeline.shard_work import ordered_pool

    return (r for _, r in ordered_pool(func, items, processes, env={k: "1" for k in _BLAS_THREADS}))


def _framed(toks: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """`[BOS] doc [EOS]` for each document of a flat token array, concatenated."""
    n = len(lens)
    out = np.empty(len(toks) + 2 * n, dtype=_TOKEN)
    starts = np.cumsum(lens + 2) - (lens + 2)
    body = np.ones(len(out), dtype=bool)
    body[starts] = body[starts + lens + 1] = False
    out[starts], out[starts + lens + 1] = BOS_ID, EOS_ID
    out[body] = toks
    return out


# --- pass 1: tokenise (tasks of about _TASK_BYTES of text; a big table is cut into several) -------------------

_TASK_BYTES = 1 << 20
_POOL_PACK_TOKENS = 32 << 20  # train tokens from which packing (pass 2) goes to worker processes too


def _rows_and_bytes(src: Source) -> tuple[int, int] | None:
    """Rows and text bytes of a source (a shard's from its Parquet footer), None if unknown."""
    if isinstance(src, pa.Table):
        return src.num_rows, src.column("text").nbytes
    try:
        import pyarrow.parquet as pq

        md = pq.read_metadata(src)
        col = [i for i in range(md.num_columns) if md.schema.column(i).name == "text"]
        nbytes = sum(md.row_group(g).column(col[0]).total_uncompressed_size for g in range(md.num_row_groups))
        return md.num_rows, nbytes
    except Exception:  # the worker reads it and reports what is wrong
        return None


@dataclass
class TokenCache:
    """Pass-1 results that outlive a killed run: the spill file and the per-document arrays of every slice of an
    input shard named in `shard_sha256` (path -> the sha256 its manifest gives), under `dir`, keyed by
    `code_version` (the stage's code and recipe slice, and the tokenizer's version), the shard's hash and the slice.
    A rerun tokenises only the slices that have no complete result (`<key>.npz`, written last)."""

    dir: str
    code_version: str
    shard_sha256: dict[str, str]

    def path(self, src: Source, j: int, m: int, ext: str) -> str | None:
        sha = None if isinstance(src, pa.Table) else self.shard_sha256.get(os.fspath(src))
        if sha is None:
            return None
        import hashlib

        key = hashlib.sha256(f"{self.code_version}\n{sha}\n{j}/{m}\n{ext}".encode()).hexdigest()[:32]
        return os.path.join(self.dir, key + ext)


def _tasks(domain_doc_iters, domains: list[str], args: tuple, spill_dir: str,
           ext: str = ".i32", cache: TokenCache | None = None) -> Iterator[tuple[tuple, tuple]]:
    """((domain index, table index, slice, slices), worker args) per task: each input table, in order, cut
    into row slices of about _TASK_BYTES of text so that one big table does not hold back the other workers.
    A slice of a shard in `cache` spills into the cache (and its result is kept there)."""
    for di, d in enumerate(domains):
        for k, src in enumerate(domain_doc_iters[d]()):
            size = _rows_and_bytes(src)
            rows, nbytes = size if size else (None, 0)
            m = max(1, min(rows or 1, -(-nbytes // _TASK_BYTES)))
            for j in range(m):
                lo, hi = (rows * j // m, rows * (j + 1) // m) if rows is not None else (0, None)
                piece = src
                if isinstance(src, pa.Table) and m > 1:  # a compact copy: a pickled slice would carry it all
                    piece = src.take(arrow_ints(np.arange(lo, hi)))
                    lo, hi = 0, None
                cached = cache.path(src, j, m, ext) if cache is not None else None
                path = cached or os.path.join(spill_dir, f"{di:04d}-{k:07d}-{j:04d}{ext}")
                yield (di, k, j, m), (piece, lo, hi, *args, path, cached is not None)


# ((path, mtime, size), table) of this process's last shard: the next slice's too. One slot, replaced whole, so
# threads of one Dask worker never pair one shard's key with another's table.
_LAST_READ: list = [None]


def _read_shard(path: str | os.PathLike) -> pa.Table:
    """A shard's id and text columns (ParquetFile: no pyarrow.dataset import in every worker)."""
    import pyarrow.parquet as pq

    from plasma_pipeline.shards import CorruptShardError

    try:
        st = os.stat(path)
        key = (str(path), st.st_mtime_ns, st.st_size)
        last = _LAST_READ[0]
        if last is not None and last[0] == key:
            return last[1]
        table = pq.ParquetFile(path).read(columns=["id", "text"])
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptShardError(f"cannot read shard {path}: {e}") from e
    _LAST_READ[0] = (key, table)
    return table


_RESULT_ARRAYS = ("train_lengths", "train_keys", "val_lengths")


def _tokenize_part(src: Source, lo: int, hi: int | None, tokenizer_path: str, seed: int, val_fraction: float,
                   num_threads: int, spill_path: str, keep: bool = False) -> dict:
    """Encode rows lo:hi of a table; write their train then val `[BOS] doc [EOS]` chunks to spill_path. With
    `keep` (a cached slice) the result is also saved beside it, last, and a saved one is loaded instead."""
    if keep:
        done = os.path.splitext(spill_path)[0] + ".npz"
        if os.path.exists(done):
            with np.load(done) as z:
                return {"path": spill_path, "empty": int(z["empty"]), "reused": True,
                        **{k: z[k] for k in _RESULT_ARRAYS}}
        r = _tokenize_part(src, lo, hi, tokenizer_path, seed, val_fraction, num_threads, spill_path)
        tmp = f"{done}.{os.getpid()}.tmp.npz"
        np.savez(tmp, empty=r["empty"], **{k: r[k] for k in _RESULT_ARRAYS})
        os.replace(tmp, done)  # after the spill file: a result on disk always has its tokens
        return {**r, "reused": False}
    from plasma_pipeline.tokenizer.encode import load_encoder

    table = src if isinstance(src, pa.Table) else _read_shard(src)
    if lo or hi is not None:
        table = table.slice(lo, (table.num_rows if hi is None else hi) - lo)
    text = table.column("text")
    nonempty = arrow_ints(np.flatnonzero(numpy_ints(pc.binary_length(text)) > 0))  # a null text reads as 0
    ids = table.column("id").take(nonempty).to_pylist()
    keys = [doc_hash(seed, "val", i) for i in ids]
    cut = val_fraction * _U64
    is_val = np.fromiter((k < cut for k in keys), dtype=bool, count=len(keys))
    toks, lens = load_encoder(tokenizer_path, num_threads).encode(text.take(nonempty))
    tok_val = np.repeat(is_val, lens)
    train = _framed(toks[~tok_val], lens[~is_val])
    val = _framed(toks[tok_val], lens[is_val])
    if len(train) or len(val):
        tmp = f"{spill_path}.{os.getpid()}.tmp"
        np.concatenate((train, val)).astype(_spill_dtype(spill_path)).tofile(tmp)
        os.replace(tmp, spill_path)
    elif os.path.exists(spill_path):
        os.remove(spill_path)
    return {
        "path": spill_path,
        "empty": table.num_rows - len(ids),
        "train_lengths": lens[~is_val] + 2,
        "train_keys": np.array([k for k, v in zip(keys, is_val) if not v], dtype=np.uint64),
        "val_lengths": lens[is_val] + 2,
    }


@dataclass
class _Part:
    """One input table's documents in its spill files (one per task slice): train (the domain's epochs read
    these, one row group per table) and val. Per document: file index into `paths`, offset, length."""

    paths: list[str]
    file: np.ndarray  # spill file of each train document's chunk
    offsets: np.ndarray  # start of each train document's chunk in its file (tokens)
    lengths: np.ndarray  # tokens of each train document's chunk, BOS and EOS included
    keys: np.ndarray  # seeded id hash of each train document
    val_file: np.ndarray
    val_offsets: np.ndarray
    val_lengths: np.ndarray


@dataclass
class _Domain:
    """Pass-1 result of one domain: its spill parts (those with train documents are the row groups), val stats."""

    parts: list[_Part] = field(default_factory=list)
    val_docs: int = 0
    val_tokens: int = 0
    val_rows: int = 0
    val_tail_dropped: int = 0

    @property
    def groups(self) -> list[_Part]:
        return [p for p in self.parts if len(p.lengths)]

    @property
    def doc_lengths(self) -> np.ndarray:
        g = self.groups
        return np.concatenate([p.lengths for p in g]) if g else np.zeros(0, np.int64)


def _part_of(results: list[dict]) -> _Part:
    """The part of one input table from the results of its slices (in order)."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("file", "off", "len", "keys", "vfile", "voff", "vlen")}
    for f, r in enumerate(results):
        tl, vl = r["train_lengths"], r["val_lengths"]
        cols["file"].append(np.full(len(tl), f, np.int64))
        cols["off"].append(np.cumsum(tl) - tl)
        cols["len"].append(tl)
        cols["keys"].append(r["train_keys"])
        cols["vfile"].append(np.full(len(vl), f, np.int64))
        cols["voff"].append(int(tl.sum()) + np.cumsum(vl) - vl)
        cols["vlen"].append(vl)
    c = {k: np.concatenate(v) for k, v in cols.items()}
    return _Part([r["path"] for r in results], c["file"], c["off"], c["len"], c["keys"].astype(np.uint64),
                 c["vfile"], c["voff"], c["vlen"])


def _read(paths: list[str], files: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Chunks (file, offset, length) of spill files, concatenated."""
    if not len(lengths):
        return np.zeros(0, _TOKEN)
    maps = {f: np.memmap(paths[f], dtype=_spill_dtype(paths[f]), mode="r") for f in np.unique(files).tolist()}
    return np.concatenate([maps[f][o : o + n] for f, o, n in zip(files.tolist(), offsets.tolist(),
                                                                  lengths.tolist())]).astype(_TOKEN)


def _hold_out_lowest(dom: _Domain, stats: Counter) -> None:
    """A domain without val documents gives its lowest-hash train document (and hash twins) to val.

    The cut is the one a val_fraction just above that hash gives: keys below nextafter(float(min key))."""
    keys = np.concatenate([p.keys for p in dom.parts]) if dom.parts else np.zeros(0, np.uint64)
    if len(keys) < 2:
        return
    cut = float(np.nextafter(float(keys.min()), np.inf))
    for p in dom.parts:
        move = np.array([int(k) < cut for k in p.keys.tolist()], dtype=bool)
        if move.any():
            # val chunks are read from the train region where they already are
            p.val_file, p.val_offsets, p.val_lengths = p.file[move], p.offsets[move], p.lengths[move]
            p.file, p.offsets, p.lengths, p.keys = p.file[~move], p.offsets[~move], p.lengths[~move], p.keys[~move]
    stats["val/min_one_doc_domains"] += 1


def _pack_val(dom: _Domain, di: int, d: str, cfg: MixConfig, val_buf: _ShardBuffer, stats: Counter) -> None:
    """Pack the domain's val chunks (input order) into pure rows, up to the per-domain cap; drop the tail."""
    lengths = np.concatenate([p.val_lengths for p in dom.parts]) if dom.parts else np.zeros(0, np.int64)
    starts = np.cumsum(lengths) - lengths
    cap = cfg.val_max_tokens_per_domain or None
    n_in = int(np.searchsorted(starts, cap, side="left")) if cap else len(lengths)
    stats["dropped/val_over_cap"] += len(lengths) - n_in
    stats["kept"] += n_in
    total = int(lengths.sum()) if cap is None else min(int(lengths.sum()), cap)
    n_rows = total // cfg.row_len
    dom.val_docs, dom.val_tokens = n_in, total
    dom.val_rows, dom.val_tail_dropped = n_rows, total - n_rows * cfg.row_len
    stats[f"tokens/val/{d}"] += n_rows * cfg.row_len
    if n_rows:
        need = n_rows * cfg.row_len
        stream, got = [], 0
        for p in dom.parts:
            if got >= need:
                break
            s = _read(p.paths, p.val_file, p.val_offsets, p.val_lengths)
            stream.append(s[: need - got])
            got += len(stream[-1])
        val_buf.add(np.concatenate(stream).reshape(n_rows, cfg.row_len), np.full(n_rows, di, dtype=np.int64))


def _keyed_part(key: tuple, args: tuple) -> tuple[tuple, dict]:
    return key, _tokenize_part(*args)


def _pass1(tasks: Iterable[tuple[tuple, tuple]], processes: int) -> Iterator[tuple[tuple, dict]]:
    """(task key, `_tokenize_part` result) per task, in task order."""
    return _map(_keyed_part, tasks, processes)


class _ShardBuffer:
    """Collects val rows and hands `rows_per_shard`-row tables to a writer."""

    def __init__(self, write: Writer, rows_per_shard: int, domains: list[str]):
        self.write, self.k, self.domains = write, rows_per_shard, domains
        self.rows: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.n = self.shards = self.total_rows = 0

    def add(self, rows: np.ndarray, labels: np.ndarray) -> None:
        self.rows.append(rows)
        self.labels.append(labels)
        self.n += len(rows)
        while self.n >= self.k:
            self._flush(self.k)

    def close(self) -> None:
        if self.n:
            self._flush(self.n)

    def _flush(self, k: int) -> None:
        rows, labels = np.concatenate(self.rows), np.concatenate(self.labels)
        self.rows, self.labels, self.n = [rows[k:]], [labels[k:]], len(rows) - k
        self.write(rows_to_table(rows[:k], [self.domains[i] for i in labels[:k]]))
        self.shards += 1
        self.total_rows += k


# --- pass 2: mix and pack ----------------------------------------------------------------------------------------


def _partial_take(dom: _Domain, plan: DomainPlan, d: str, cfg: MixConfig) -> np.ndarray:
    """Tokens taken from each document in the partial epoch: lowest seeded hashes first, the boundary one cut."""
    lengths = dom.doc_lengths
    h = _mix64(np.concatenate([p.keys for p in dom.groups]), doc_hash(cfg.seed, f"epoch{plan.full_epochs}", d))
    order = np.argsort(h, kind="stable")
    cum = np.cumsum(lengths[order])
    k = int(np.searchsorted(cum, plan.partial_tokens, side="left"))
    take = np.zeros(len(lengths), dtype=np.int64)
    take[order[:k]] = lengths[order[:k]]
    take[order[k]] = plan.partial_tokens - (int(cum[k - 1]) if k else 0)
    return take


def _domain_sequence(dom: _Domain, plan: DomainPlan, d: str, cfg: MixConfig) -> tuple[np.ndarray, np.ndarray]:
    """(document index, tokens taken) of the domain's chunks in stream order, epoch after epoch."""
    lengths = dom.doc_lengths
    groups = dom.groups
    rg_starts = np.concatenate(([0], np.cumsum([len(p.lengths) for p in groups])))
    epochs: list[np.ndarray] = [lengths] * plan.full_epochs
    if plan.partial_tokens:
        epochs.append(_partial_take(dom, plan, d, cfg))
    docs, takes = [], []
    for e, take in enumerate(epochs):
        rng = np.random.default_rng([cfg.seed, e, doc_hash(cfg.seed, "domain", d)])
        for rg in rng.permutation(len(groups)):
            lo, hi = int(rg_starts[rg]), int(rg_starts[rg + 1])
            if not take[lo:hi].any():
                continue
            sel = lo + rng.permutation(hi - lo)
            n = take[sel]
            docs.append(sel[n > 0])
            takes.append(n[n > 0])
    if not docs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(docs), np.concatenate(takes)


@dataclass
class ShardFiles:
    """Train shards written by the pack tasks themselves (zstd Parquet of at most `max_rows` rows and
    `row_group_rows`-row groups, fsynced and hashed) into `dir`; the parent only calls `adopt(path, sha256)`
    for each, in order (VersionWriter.add_file)."""

    dir: str
    adopt: Callable[[str, str], None]
    max_rows: int = 50_000
    row_group_rows: int = 5_000


def _train_shard_files(out: tuple[str, int, int], *args) -> list[tuple[str, int, str]]:
    """Pack train shard `args[0]` and write it as files of at most max_rows rows: [(path, rows, sha256)]."""
    import pyarrow.parquet as pq

    from plasma_pipeline.shards import file_sha256

    out_dir, max_rows, row_group_rows = out
    table = _train_shard(*args)
    files = []
    for p, lo in enumerate(range(0, table.num_rows, max_rows)):
        path = os.path.join(out_dir, f"train-{args[0]:06d}-{p:03d}.parquet")
        tmp = f"{path}.{os.getpid()}.tmp"
        piece = table.slice(lo, max_rows)
        pq.write_table(piece, tmp, compression="zstd", row_group_size=row_group_rows)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        files.append((path, piece.num_rows, file_sha256(path)))
    return files


def _train_shard(s: int, paths: list[str], c_file: np.ndarray, c_off: np.ndarray, c_start: np.ndarray,
                 c_n: np.ndarray, c_dom: np.ndarray, t0: int, t1: int, total: int, row_len: int,
                 domains: list[str], seed: int) -> pa.Table:
    """Train shard s: stream tokens [t0, t1) (padded past `total`) from the chunks overlapping it, as rows with
    majority-domain labels, shuffled by the shard's seeded permutation."""
    toks = np.full(t1 - t0, PAD_ID, dtype=_TOKEN)
    lo = np.maximum(c_start, t0)
    hi = np.minimum(c_start + c_n, min(t1, total))
    n = hi - lo
    src = c_off + (lo - c_start)
    dst = lo - t0
    by_file = np.argsort(c_file, kind="stable")
    cuts = np.flatnonzero(np.diff(c_file[by_file])) + 1
    for sel in np.split(by_file, cuts):
        path = paths[int(c_file[sel[0]])]
        mm = np.memmap(path, dtype=_spill_dtype(path), mode="r")
        ns = n[sel]
        ends = np.cumsum(ns)
        shift = np.repeat(ends - ns, ns)
        pos = np.arange(int(ends[-1]), dtype=np.int64) - shift
        toks[np.repeat(dst[sel], ns) + pos] = mm[np.repeat(src[sel], ns) + pos]
    k = (t1 - t0) // row_len
    # tokens of each domain in each row, from the chunks' pieces (a chunk spans one row or a few), pad uncounted
    r0, r1 = dst // row_len, (dst + n - 1) // row_len
    span = r1 - r0 + 1
    row = np.repeat(r0, span) + (np.arange(int(span.sum())) - np.repeat(np.cumsum(span) - span, span))
    a, b = np.repeat(dst, span), np.repeat(dst + n, span)
    inside = np.minimum(b, (row + 1) * row_len) - np.maximum(a, row * row_len)
    n_dom = len(domains)
    counts = np.bincount(row * n_dom + np.repeat(c_dom.astype(np.int64), span), weights=inside,
                         minlength=k * n_dom).reshape(k, n_dom)
    rows, labels = toks.reshape(k, row_len), counts.argmax(axis=1)  # ties: the first domain, as majority_domain
    perm = np.random.default_rng([seed, s, 7]).permutation(k)
    return rows_to_table(rows[perm], [domains[i] for i in labels[perm]])


# --- the stage ---------------------------------------------------------------------------------------------------


def build_token_shards(
    domain_doc_iters: dict[str, Callable[[], Iterable[Source]]],
    tokenizer_path: str | os.PathLike,
    cfg: MixConfig,
    writer_train: Writer | ShardFiles,
    writer_val: Writer,
    stats: Counter,
    work_dir: str | os.PathLike | None = None,
    processes: int = 1,
    cache: TokenCache | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Mix, tokenise and pack the domains into TOKEN_SCHEMA tables handed to writer_train / writer_val.

    `domain_doc_iters[d]()` yields the domain's document tables (columns id, text) or the paths of Parquet shards
    holding them; it is called once. With processes > 1 the sources of all domains are listed up front, so pass
    paths (each worker reads its shard) to keep memory bounded. Domains with weight 0 (or missing from
    cfg.weights) are not read. Token spills go under `work_dir` (a temporary directory by default, removed at
    the end). `processes` (0 = all cores) worker processes tokenise and pack; the output does not depend on it.
    `writer_train` may be a `ShardFiles`: the pack tasks then write the train shards themselves. With `cache`,
    tokenised slices of the shards it names are kept there, and a rerun after a kill reuses them (`log` says
    how many shards were reused).
    Returns the metadata described in the module doc."""
    unknown = sorted(set(cfg.weights) - set(domain_doc_iters))
    if unknown:
        raise ValueError(f"mix.weights: unknown domains {unknown} (available: {sorted(domain_doc_iters)})")
    tokenizer_path = str(tokenizer_path)
    sp = load_tokenizer(tokenizer_path)
    if (sp.pad_id(), sp.bos_id(), sp.eos_id()) != (PAD_ID, BOS_ID, EOS_ID):
        raise ValueError(f"tokenizer {tokenizer_path}: pad/bos/eos ids are not {(PAD_ID, BOS_ID, EOS_ID)}")
    processes = processes or os.cpu_count() or 1
    threads = cfg.num_threads if processes <= 1 else 1
    domains = sorted(d for d in domain_doc_iters if cfg.weights.get(d, 0) > 0)
    skipped = sorted(set(domain_doc_iters) - set(domains))
    n_dom = len(domains)
    R, L = cfg.rows_per_shard, cfg.row_len

    with tempfile.TemporaryDirectory(prefix="plasma-mix-", dir=work_dir) as spill_dir:
        # pass 1: tokenise every table, domain after domain; a domain is complete when the next one's results come
        spills: dict[str, _Domain] = {d: _Domain() for d in domains}
        val_buf = _ShardBuffer(writer_val, R, domains)
        done = 0
        slices: list[dict] = []

        def finish(di: int) -> None:
            d, dom = domains[di], spills[domains[di]]
            if not any(len(p.val_lengths) for p in dom.parts):
                _hold_out_lowest(dom, stats)
            _pack_val(dom, di, d, cfg, val_buf, stats)

        ext = ".u16" if sp.get_piece_size() <= 1 << 16 else ".i32"
        tasks = _tasks(domain_doc_iters, domains, (tokenizer_path, cfg.seed, cfg.val_fraction, threads), spill_dir,
                       ext, cache)
        if cache is not None:
            os.makedirs(cache.dir, exist_ok=True)
        n_shards = n_reused = 0
        for (di, _, j, m), r in _pass1(tasks, processes):
            while done < di:
                finish(done)
                done += 1
            stats["dropped/empty_text"] += r["empty"]
            slices.append(r)
            if j == m - 1:
                n_shards += 1
                n_reused += all(x.get("reused") for x in slices)
                spills[domains[di]].parts.append(_part_of(slices))
                slices = []
        if log is not None and cache is not None:
            log(f"tokenize: reused {n_reused} of {n_shards} shards from an earlier run" if n_reused
                else f"tokenize: {n_shards} shards")
        while done < n_dom:
            finish(done)
            done += 1
        val_buf.close()
        _LAST_READ[0] = None

        plans = plan_mix({d: int(s.doc_lengths.sum()) for d, s in spills.items()}, cfg)
        for d, p in plans.items():
            if p.capped:
                stats["warning/epoch_cap"] += 1
                stats[f"warning/epoch_cap/{d}"] += 1

        # pass 2: every domain's chunk sequence, merged by the stride scheduler's order
        paths: list[str] = []
        seq_file, seq_off, seq_n, seq_dom, seq_key = [], [], [], [], []
        used: dict[str, np.ndarray] = {}
        per_dom_chunks: dict[str, int] = {}
        truncated = 0
        for di, d in enumerate(domains):
            dom, plan = spills[d], plans[d]
            groups = dom.groups
            lengths = dom.doc_lengths
            used[d] = np.zeros(len(lengths), dtype=bool)
            per_dom_chunks[d] = 0
            if plan.achieved_tokens <= 0:
                continue
            docs, n = _domain_sequence(dom, plan, d, cfg)
            used[d][docs] = True
            per_dom_chunks[d] = len(docs)
            truncated += int((n < lengths[docs]).sum())
            doc_file = []
            for p in groups:  # global spill file index of every train document
                doc_file.append(len(paths) + p.file)
                paths.extend(p.paths)
            seq_file.append(np.concatenate(doc_file)[docs])
            seq_off.append(np.concatenate([p.offsets for p in groups])[docs])
            seq_n.append(n)
            seq_dom.append(np.full(len(docs), di, dtype=np.int16))
            seq_key.append((np.cumsum(n) - n) / plan.achieved_tokens)
        placed = {d: 0 for d in domains}
        n_rows = pad = 0
        rows_train = shards_train = 0
        if seq_n:
            key, dom_ix = np.concatenate(seq_key), np.concatenate(seq_dom)
            order = np.lexsort((dom_ix, key))
            c_file = np.concatenate(seq_file)[order]
            c_off = np.concatenate(seq_off)[order]
            c_n = np.concatenate(seq_n)[order]
            c_dom = dom_ix[order]
            c_start = np.cumsum(c_n) - c_n
            total = int(c_n.sum())
            for di, d in enumerate(domains):
                placed[d] = int(c_n[c_dom == di].sum())
            n_rows = -(-total // L)
            pad = n_rows * L - total
            c_end = c_start + c_n

            def shard_tasks():
                for s in range(-(-n_rows // R)):
                    t0, t1 = s * R * L, min((s + 1) * R, n_rows) * L
                    i0 = int(np.searchsorted(c_end, t0, side="right"))
                    i1 = int(np.searchsorted(c_start, t1, side="left"))
                    files, local = np.unique(c_file[i0:i1], return_inverse=True)
                    yield (s, [paths[f] for f in files], local, c_off[i0:i1], c_start[i0:i1], c_n[i0:i1],
                           c_dom[i0:i1], t0, t1, total, L, domains, cfg.seed)

            # Packing costs ~20 ns a token: a pool pays for its start only on big outputs of several shards.
            pool = processes if -(-n_rows // R) > 1 and total >= _POOL_PACK_TOKENS else 1
            if isinstance(writer_train, ShardFiles):
                out = (writer_train.dir, writer_train.max_rows, writer_train.row_group_rows)
                os.makedirs(writer_train.dir, exist_ok=True)
                for files in _map(_train_shard_files, ((out, *t) for t in shard_tasks()), pool):
                    for path, rows, sha in files:
                        writer_train.adopt(path, sha)
                        rows_train += rows
                    shards_train += 1
            else:
                for table in _map(_train_shard, shard_tasks(), pool):
                    writer_train(table)
                    rows_train += table.num_rows
                    shards_train += 1

    for d in domains:
        if placed[d] != plans[d].achieved_tokens:  # an internal invariant, not a data condition
            raise AssertionError(f"mix: placed {placed[d]} tokens of {d!r}, planned {plans[d].achieved_tokens}")
        n_docs = len(used[d])
        n_used = int(used[d].sum())
        stats["kept"] += n_used
        stats["dropped/not_sampled"] += n_docs - n_used
        stats[f"tokens/train/{d}"] += placed[d]
        if per_dom_chunks[d]:
            stats[f"docs/train/{d}"] += per_dom_chunks[d]
    if truncated:
        stats["docs/truncated"] += truncated
    stats["rows/train"] += rows_train
    stats["rows/val"] += val_buf.total_rows
    stats["tokens/pad"] += pad

    per_domain = {}
    for d in domains:
        s, p = spills[d], plans[d]
        per_domain[d] = {
            **p.as_dict(),
            "docs_available": int(len(s.doc_lengths)),
            "docs_used": per_dom_chunks[d],
            "unique_docs_used": int(used[d].sum()),
            "val_docs": s.val_docs,
            "val_tokens": s.val_tokens - s.val_tail_dropped,
            "val_rows": s.val_rows,
            "val_tail_tokens_dropped": s.val_tail_dropped,
        }
    return {
        "seq_len": cfg.seq_len,
        "row_len": cfg.row_len,
        "total_tokens_requested": cfg.total_tokens,
        "total_tokens_achieved": sum(placed.values()),
        "tokens_per_domain_requested": {d: plans[d].requested_tokens for d in domains},
        "tokens_per_domain_achieved": dict(placed),
        "epochs_per_domain": {d: round(plans[d].epochs, 6) for d in domains},
        "capped_domains": [d for d in domains if plans[d].capped],
        "val_tokens_per_domain": {d: per_domain[d]["val_tokens"] for d in domains},
        "rows_train": rows_train,
        "rows_val": val_buf.total_rows,
        "shards_train": shards_train,
        "shards_val": val_buf.shards,
        "pad_tokens": pad,
        "skipped_domains": skipped,
        "row_domain_label": "majority of the row's tokens",
        "domains": per_domain,
    }
