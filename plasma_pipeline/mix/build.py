"""Stage 7: domain-weighted mixing with exact token budgets, packed into train / val token shards.

Each domain's input is read once (`domain_doc_iters[d]()` is called once), in two streaming passes:

1. Tokenise every document once (batch `sp.encode` per input table). A document whose seeded id hash falls under
   `val_fraction` goes to val (before any budget is allocated, so no document is in both splits); val documents
   are packed per domain, so every val row is one domain. Train documents are spilled to a per-domain Parquet
   file (one row group per input table) together with their lengths; this gives the available tokens per domain.
2. `plan_mix` turns the available tokens into exact budgets. Each domain then streams `[BOS] doc [EOS]` chunks
   from its spill: full epochs take every document; the last, partial epoch takes the documents with the lowest
   seeded key for that epoch (splitmix64 of id hash and epoch) until the budget is met, the boundary document
   truncated so the domain gets exactly its budget. Every epoch reads the row groups, and the documents inside
   them, in a fresh seeded order. A stride scheduler interleaves the domains in proportion to their budgets;
   chunks are packed into rows of seq_len + 1 tokens, and each buffer of `rows_per_shard` rows is shuffled with a
   seeded permutation before it is written.

Row domain label: the domain holding the majority of the row's tokens (ties: first domain by name). The train
budget counts every token placed, BOS and EOS included; the last incomplete train row is padded with pad id 0
(reported as `pad_tokens`; targets equal to pad should be ignored by the trainer). Incomplete last val rows are
dropped per domain (reported as `val_tail_tokens_dropped`), so val holds no padding.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from plasma_pipeline.mix.config import MixConfig
from plasma_pipeline.mix.pack import RowPacker, majority_domain, rows_to_table
from plasma_pipeline.mix.plan import DomainPlan, plan_mix
from plasma_pipeline.tokenizer import BOS_ID, EOS_ID, PAD_ID, doc_hash, load_tokenizer

Writer = Callable[[pa.Table], None]
_SPILL_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("ids", pa.list_(pa.int32()))])
_U64 = float(2**64)


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


class _ShardBuffer:
    """Collects rows and hands `rows_per_shard`-row tables to a writer, optionally shuffled by a seeded permutation."""

    def __init__(self, write: Writer, cfg: MixConfig, domains: list[str], tag: str, shuffle: bool):
        self.write, self.cfg, self.domains, self.tag, self.shuffle = write, cfg, domains, tag, shuffle
        self.rows: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.n = 0
        self.shards = 0
        self.total_rows = 0

    def add(self, rows: np.ndarray, labels: np.ndarray) -> None:
        self.rows.append(rows)
        self.labels.append(labels)
        self.n += len(rows)
        while self.n >= self.cfg.rows_per_shard:
            self._flush(self.cfg.rows_per_shard)

    def close(self) -> None:
        if self.n:
            self._flush(self.n)

    def _flush(self, k: int) -> None:
        rows, labels = np.concatenate(self.rows), np.concatenate(self.labels)
        out_r, out_l = rows[:k], labels[:k]
        self.rows, self.labels, self.n = [rows[k:]], [labels[k:]], len(rows) - k
        if self.shuffle:
            perm = np.random.default_rng([self.cfg.seed, self.shards, 7]).permutation(k)
            out_r, out_l = out_r[perm], out_l[perm]
        self.write(rows_to_table(out_r, [self.domains[i] for i in out_l]))
        self.shards += 1
        self.total_rows += k


def _encode(sp, texts: list[str], cfg: MixConfig) -> list[list[int]]:
    return sp.encode(texts, num_threads=cfg.num_threads) if texts else []


def _flatten(enc: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(enc))
    offsets = np.zeros(len(enc) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(enc), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


class _DomainSpill:
    """Pass-1 result of one domain: train token spill file, train doc lengths (with BOS/EOS), val stats."""

    def __init__(self, path: str):
        self.path = path
        self.lengths: list[np.ndarray] = []  # per row group
        self.keys: list[np.ndarray] = []  # seeded id hash per train document, per row group
        self.val_docs = 0
        self.val_tokens = 0
        self.val_rows = 0
        self.val_tail_dropped = 0

    @property
    def doc_lengths(self) -> np.ndarray:
        return np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)


def _tokenize_domain(
    d: str,
    di: int,
    tables: Iterable[pa.Table],
    sp,
    cfg: MixConfig,
    spill_dir: str,
    val_buf: _ShardBuffer,
    stats: Counter,
) -> _DomainSpill:
    spill = _DomainSpill(os.path.join(spill_dir, f"{di:04d}.parquet"))
    val_packer = RowPacker(cfg.row_len)
    val_cap = cfg.val_max_tokens_per_domain or None
    writer = pq.ParquetWriter(spill.path, _SPILL_SCHEMA, compression="zstd")
    try:
        for table in tables:
            ids = table.column("id").to_pylist()
            texts = table.column("text").to_pylist()
            keep = [i for i, t in enumerate(texts) if t]
            stats["dropped/empty_text"] += len(texts) - len(keep)
            keys = {i: _doc_key(ids[i], cfg) for i in keep}
            cut = cfg.val_fraction * _U64
            val_i = [i for i in keep if keys[i] < cut]
            train_i = [i for i in keep if keys[i] >= cut]
            # val: pack this domain's documents into pure rows, up to the cap
            for toks in _encode(sp, [texts[i] for i in val_i], cfg):
                room = (val_cap - spill.val_tokens) if val_cap else None
                if room is not None and room <= 0:
                    stats["dropped/val_over_cap"] += 1
                    continue
                chunk = np.concatenate(([BOS_ID], np.asarray(toks, dtype=np.int32), [EOS_ID])).astype(np.int32)
                if room is not None and len(chunk) > room:
                    chunk = chunk[:room]
                val_packer.add(chunk, di)
                spill.val_docs += 1
                spill.val_tokens += len(chunk)
                stats["kept"] += 1
                got = val_packer.rows()
                if got is not None:
                    val_buf.add(got[0], np.full(len(got[0]), di))
                    spill.val_rows += len(got[0])
            # train: spill tokens, remember lengths
            if train_i:
                flat, offsets = _flatten(_encode(sp, [texts[i] for i in train_i], cfg))
                col = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat, type=pa.int32()))
                writer.write_table(
                    pa.Table.from_arrays([pa.array([ids[i] for i in train_i], pa.string()), col], schema=_SPILL_SCHEMA),
                    row_group_size=len(train_i),
                )
                spill.lengths.append(np.diff(offsets) + 2)
                spill.keys.append(np.array([keys[i] for i in train_i], dtype=np.uint64))
    finally:
        writer.close()
    got = val_packer.rows(force=True)
    if got is not None:
        val_buf.add(got[0], np.full(len(got[0]), di))
        spill.val_rows += len(got[0])
    tail, _ = val_packer.tail()
    spill.val_tail_dropped = len(tail)
    stats[f"tokens/val/{d}"] += spill.val_tokens - len(tail)
    return spill


def _tokenize_domain_with_val(
    d: str, di: int, tables: Callable[[], Iterable[pa.Table]], sp, cfg: MixConfig, spill_dir: str,
    val_buf: _ShardBuffer, stats: Counter,
) -> _DomainSpill:
    """`_tokenize_domain`, but a domain of few documents whose hashes all miss val_fraction still gets one val
    document (the lowest hash), so every domain has a val loss. Only such small domains are tokenized twice."""
    first = Counter()
    spill = _tokenize_domain(d, di, tables(), sp, cfg, spill_dir, val_buf, first)
    keys = np.concatenate(spill.keys) if spill.keys else np.zeros(0, np.uint64)
    if spill.val_docs or len(keys) < 2:
        stats.update(first)
        return spill
    os.unlink(spill.path)
    # A cut just above the smallest train key moves exactly that document (and its hash twins) to val.
    cut = float(np.nextafter(float(keys.min()), np.inf)) / _U64
    stats["val/min_one_doc_domains"] += 1
    return _tokenize_domain(d, di, tables(), sp, dataclasses.replace(cfg, val_fraction=cut), spill_dir, val_buf, stats)


def _partial_take(spill: _DomainSpill, plan: DomainPlan, d: str, cfg: MixConfig) -> np.ndarray:
    """Tokens taken from each document in the partial epoch: lowest seeded hashes first, the boundary one cut."""
    lengths = spill.doc_lengths
    h = _mix64(np.concatenate(spill.keys), doc_hash(cfg.seed, f"epoch{plan.full_epochs}", d))
    order = np.argsort(h, kind="stable")
    cum = np.cumsum(lengths[order])
    k = int(np.searchsorted(cum, plan.partial_tokens, side="left"))
    take = np.zeros(len(lengths), dtype=np.int64)
    take[order[:k]] = lengths[order[:k]]
    take[order[k]] = plan.partial_tokens - (int(cum[k - 1]) if k else 0)
    return take


def _domain_chunks(
    spill: _DomainSpill, plan: DomainPlan, d: str, di: int, cfg: MixConfig, stats: Counter, used: np.ndarray
) -> Iterator[np.ndarray]:
    """`[BOS] doc [EOS]` chunks of one domain, epoch after epoch, summing to exactly plan.achieved_tokens."""
    lengths = spill.doc_lengths
    rg_starts = np.concatenate(([0], np.cumsum([len(x) for x in spill.lengths])))
    epochs: list[np.ndarray] = [lengths] * plan.full_epochs
    if plan.partial_tokens:
        epochs.append(_partial_take(spill, plan, d, cfg))
    pf = pq.ParquetFile(spill.path)
    for e, take in enumerate(epochs):
        rng = np.random.default_rng([cfg.seed, e, doc_hash(cfg.seed, "domain", d)])
        for rg in rng.permutation(pf.num_row_groups):
            lo, hi = int(rg_starts[rg]), int(rg_starts[rg + 1])
            part = take[lo:hi]
            if not part.any():
                continue
            col = pf.read_row_group(int(rg), columns=["ids"]).column("ids").combine_chunks()
            offs = col.offsets.to_numpy()
            vals = col.values.to_numpy(zero_copy_only=False)
            for j in rng.permutation(hi - lo):
                n = int(part[j])
                if n == 0:
                    continue
                doc = np.empty(lengths[lo + j], dtype=np.int32)
                doc[0], doc[-1] = BOS_ID, EOS_ID
                doc[1:-1] = vals[offs[j] : offs[j + 1]]
                if n < len(doc):
                    stats["docs/truncated"] += 1
                used[lo + j] = True
                stats[f"docs/train/{d}"] += 1
                yield doc[:n]


def build_token_shards(
    domain_doc_iters: dict[str, Callable[[], Iterable[pa.Table]]],
    tokenizer_path: str | os.PathLike,
    cfg: MixConfig,
    writer_train: Writer,
    writer_val: Writer,
    stats: Counter,
    work_dir: str | os.PathLike | None = None,
) -> dict:
    """Mix, tokenise and pack the domains into TOKEN_SCHEMA tables handed to writer_train / writer_val.

    `domain_doc_iters[d]()` yields the domain's document tables (columns id, text); it is called once.
    Domains with weight 0 (or missing from cfg.weights) are not read. Token spills go under `work_dir`
    (a temporary directory by default, removed at the end). Returns the metadata described in the module doc.
    """
    unknown = sorted(set(cfg.weights) - set(domain_doc_iters))
    if unknown:
        raise ValueError(f"mix.weights: unknown domains {unknown} (available: {sorted(domain_doc_iters)})")
    sp = load_tokenizer(tokenizer_path)
    if (sp.pad_id(), sp.bos_id(), sp.eos_id()) != (PAD_ID, BOS_ID, EOS_ID):
        raise ValueError(f"tokenizer {tokenizer_path}: pad/bos/eos ids are not {(PAD_ID, BOS_ID, EOS_ID)}")
    domains = sorted(d for d in domain_doc_iters if cfg.weights.get(d, 0) > 0)
    skipped = sorted(set(domain_doc_iters) - set(domains))
    val_buf = _ShardBuffer(writer_val, cfg, domains, "val", shuffle=False)
    train_buf = _ShardBuffer(writer_train, cfg, domains, "train", shuffle=True)

    with tempfile.TemporaryDirectory(prefix="plasma-mix-", dir=work_dir) as spill_dir:
        spills = {
            d: _tokenize_domain_with_val(d, di, domain_doc_iters[d], sp, cfg, spill_dir, val_buf, stats)
            for di, d in enumerate(domains)
        }
        val_buf.close()
        plans = plan_mix({d: int(s.doc_lengths.sum()) for d, s in spills.items()}, cfg)
        for d, p in plans.items():
            if p.capped:
                stats["warning/epoch_cap"] += 1
                stats[f"warning/epoch_cap/{d}"] += 1

        # Stride scheduling: always extend the domain that is furthest behind its share of the budget.
        used = {d: np.zeros(len(spills[d].doc_lengths), dtype=bool) for d in domains}
        streams = {d: _domain_chunks(spills[d], plans[d], d, di, cfg, stats, used[d]) for di, d in enumerate(domains)}
        placed = dict.fromkeys(domains, 0)
        heap = [(0.0, di, d) for di, d in enumerate(domains) if plans[d].achieved_tokens > 0]
        heapq.heapify(heap)
        packer = RowPacker(cfg.row_len)
        n_dom = len(domains)
        while heap:
            _, di, d = heapq.heappop(heap)
            chunk = next(streams[d], None)
            if chunk is None:
                continue
            packer.add(chunk, di)
            placed[d] += len(chunk)
            heapq.heappush(heap, (placed[d] / plans[d].achieved_tokens, di, d))
            got = packer.rows()
            if got is not None:
                train_buf.add(got[0], majority_domain(got[1], n_dom))
        got = packer.rows(force=True)
        if got is not None:
            train_buf.add(got[0], majority_domain(got[1], n_dom))
        tail, tail_dom = packer.tail()
        pad = 0
        if len(tail):
            pad = cfg.row_len - len(tail)
            row = np.concatenate((tail, np.full(pad, PAD_ID, np.int32)))[None, :]
            doms = np.concatenate((tail_dom, np.full(pad, -1, np.int16)))[None, :]
            train_buf.add(row, majority_domain(doms, n_dom))
        train_buf.close()

    for d in domains:
        if placed[d] != plans[d].achieved_tokens:  # an internal invariant, not a data condition
            raise AssertionError(f"mix: placed {placed[d]} tokens of {d!r}, planned {plans[d].achieved_tokens}")
        n_docs = len(used[d])
        n_used = int(used[d].sum())
        stats["kept"] += n_used
        stats["dropped/not_sampled"] += n_docs - n_used
        stats[f"tokens/train/{d}"] += placed[d]
    stats["rows/train"] += train_buf.total_rows
    stats["rows/val"] += val_buf.total_rows
    stats["tokens/pad"] += pad

    per_domain = {}
    for d in domains:
        s, p = spills[d], plans[d]
        per_domain[d] = {
            **p.as_dict(),
            "docs_available": int(len(s.doc_lengths)),
            "docs_used": int(stats[f"docs/train/{d}"]),
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
        "rows_train": train_buf.total_rows,
        "rows_val": val_buf.total_rows,
        "shards_train": train_buf.shards,
        "shards_val": val_buf.shards,
        "pad_tokens": pad,
        "skipped_domains": skipped,
        "row_domain_label": "majority of the row's tokens",
        "domains": per_domain,
    }
