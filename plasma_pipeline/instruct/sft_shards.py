"""Stage 10 `sft_shards`: instructions -> chat-template token rows with loss masks (SFT_SCHEMA).

Each conversation is rendered by `chat_template.render` ([BOS] ... [EOS], mask 1 exactly on assistant content and
its closing <|end|>). Rows hold exactly seq_len + 1 ids; the tail is padded with pad id 0 and mask 0. With
`pack`, whole conversations of the same source are appended to a row while they fit (a conversation is never
split across rows, so `domain` is exact); otherwise each conversation gets its own padded row. A conversation
longer than seq_len + 1 is truncated (counted `truncated`; dropped as `dropped/too_long` if no trained token
survives) or dropped, per `too_long`. Conversations go to val when a hash of (seed, id) < val_fraction. Rows are
shuffled in a bounded buffer (shuffle_buffer_rows) before being cut into shards of rows_per_shard rows.

Counters: kept (conversations written), conversations/<source>, conversations/<split>, rows/<split>,
tokens (non-pad), tokens/trained, tokens/pad, truncated, dropped/too_long, dropped/bad_messages.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa

from plasma_pipeline.chat_template import PAD_ID, load_sp, render
from plasma_pipeline.instruct.config import SFTShardConfig
from plasma_pipeline.schema import SFT_SCHEMA

Writer = Callable[[pa.Table], Any]


def is_val(conv_id: str, cfg: SFTShardConfig) -> bool:
    h = hashlib.blake2b(f"{cfg.seed}\x00{conv_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < cfg.val_fraction


class _SplitWriter:
    """Packs conversations into fixed rows per source, buffers rows, shuffles and writes shards."""

    def __init__(self, split: str, cfg: SFTShardConfig, write: Writer, stats: Counter, seed_salt: int):
        self.split, self.cfg, self.write, self.stats = split, cfg, write, stats
        self.L = cfg.seq_len + 1
        self.open: dict[str, tuple[list[int], list[int]]] = {}
        self.rows: list[tuple[list[int], str, list[int]]] = []
        self.rng = random.Random(cfg.seed * 1000003 + seed_salt)

    def add(self, source: str, ids: list[int], mask: list[int]) -> None:
        if not self.cfg.pack:
            self._finish_row(source, ids, mask)
            return
        cur = self.open.get(source)
        if cur is not None and len(cur[0]) + len(ids) > self.L:
            self._finish_row(source, *cur)
            cur = None
        if cur is None:
            self.open[source] = (list(ids), list(mask))
        else:
            cur[0].extend(ids)
            cur[1].extend(mask)

    def _finish_row(self, source: str, ids: list[int], mask: list[int]) -> None:
        pad = self.L - len(ids)
        self.stats["tokens/pad"] += pad
        self.rows.append((ids + [PAD_ID] * pad, source, mask + [0] * pad))
        if len(self.rows) >= self.cfg.shuffle_buffer_rows:
            self._emit(final=False)

    def _emit(self, final: bool) -> None:
        self.rng.shuffle(self.rows)
        n = self.cfg.rows_per_shard
        cut = len(self.rows) if final else len(self.rows) // n * n
        for i in range(0, cut, n):
            chunk = self.rows[i : i + n]
            self.write(pa.table(
                {
                    "input_ids": pa.array([r[0] for r in chunk], type=pa.list_(pa.int32())),
                    "domain": pa.array([r[1] for r in chunk], type=pa.string()),
                    "loss_mask": pa.array([r[2] for r in chunk], type=pa.list_(pa.uint8())),
                },
                schema=SFT_SCHEMA,
            ))
            self.stats[f"rows/{self.split}"] += len(chunk)
            self.stats[f"shards/{self.split}"] += 1
        self.rows = self.rows[cut:]

    def close(self) -> None:
        for source in sorted(self.open):
            self._finish_row(source, *self.open[source])
        self.open.clear()
        self._emit(final=True)


def build_sft_shards(instruction_tables: Iterable[pa.Table], tokenizer_path: str, cfg: SFTShardConfig,
                     write_train: Writer, write_val: Writer, stats: Counter) -> dict[str, Any]:
    """Render, mask, pack and write SFT rows; returns metadata (counts and token fractions)."""
    sp = load_sp(str(tokenizer_path))
    L = cfg.seq_len + 1
    caller_stats, stats = stats, Counter()  # metadata comes from this call's counts only
    writers = {"train": _SplitWriter("train", cfg, write_train, stats, 1),
               "val": _SplitWriter("val", cfg, write_val, stats, 2)}
    per_source: Counter = Counter()
    for table in instruction_tables:
        for conv_id, source, msgs in zip(table.column("id").to_pylist(), table.column("source").to_pylist(),
                                         table.column("messages").to_pylist()):
            try:
                ids, mask = render(msgs, sp)
            except ValueError:
                stats["dropped/bad_messages"] += 1
                continue
            if len(ids) > L:
                if cfg.too_long == "drop" or not any(mask[:L]):
                    stats["dropped/too_long"] += 1
                    continue
                ids, mask = ids[:L], mask[:L]
                stats["truncated"] += 1
            split = "val" if is_val(conv_id, cfg) else "train"
            writers[split].add(source, ids, mask)
            per_source[source] += 1
            stats["kept"] += 1
            stats[f"conversations/{source}"] += 1
            stats[f"conversations/{split}"] += 1
            stats["tokens"] += len(ids)
            stats["tokens/trained"] += sum(mask)
    for w in writers.values():
        w.close()
    caller_stats.update(stats)
    positions = (stats["rows/train"] + stats["rows/val"]) * L
    return {
        "seq_len": cfg.seq_len,
        "pack": cfg.pack,
        "conversations": stats["kept"],
        "conversations_train": stats["conversations/train"],
        "conversations_val": stats["conversations/val"],
        "rows_train": stats["rows/train"],
        "rows_val": stats["rows/val"],
        "tokens": stats["tokens"],
        "trained_tokens": stats["tokens/trained"],
        # Share of real (non-pad) tokens that are trained, and of all row positions (padding included).
        "trained_token_fraction": stats["tokens/trained"] / stats["tokens"] if stats["tokens"] else 0.0,
        "trained_position_fraction": stats["tokens/trained"] / positions if positions else 0.0,
        "padding_fraction": stats["tokens/pad"] / positions if positions else 0.0,
        "truncated": stats["truncated"],
        "dropped_too_long": stats["dropped/too_long"],
        "per_source": dict(sorted(per_source.items())),
    }
