"""Deterministic, resumable loader over packed token shards (train/*.parquet, val/*.parquet).

Each row holds exactly seq_len + 1 tokens (`input_ids`); inputs are row[:-1], targets row[1:].
SFT shards add `loss_mask` (uint8, same length); target i is trained iff loss_mask[i + 1] == 1.

Order: every epoch visits the files in a seeded permutation and the rows of each file in a seeded
permutation. The position (epoch, file cursor, row cursor) is all the state; it goes into checkpoints.
Only one file is held in memory at a time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch


@dataclass
class Batch:
    """One optimizer step's sequences, on the host."""

    inputs: torch.Tensor  # (b, s) int64
    targets: torch.Tensor  # (b, s) int64
    mask: torch.Tensor | None  # (b, s) float32 target mask (SFT), None = all targets count
    domain: str = ""  # val batches: the one domain all rows come from
    global_targets: int | None = None  # under data parallel: the global batch's count (distributed.shard)

    @property
    def n_targets(self) -> int:
        """Targets the loss is averaged over: this batch's, or the global batch's when it is one rank's slice."""
        if self.global_targets is not None:
            return self.global_targets
        return int(self.targets.numel() if self.mask is None else self.mask.sum().item())


@dataclass
class LoaderPosition:
    epoch: int = 0
    file_cursor: int = 0
    row_cursor: int = 0
    sequences_seen: int = 0


def shard_files(data_dir: str | Path, split: str) -> list[Path]:
    files = sorted((Path(data_dir) / split).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no {split}/*.parquet under {data_dir}")
    return files


def read_shard(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(rows, seq_len+1) int64 tokens and the uint8 loss mask if the shard has one."""
    schema = pq.read_schema(path)
    cols = ["input_ids"] + (["loss_mask"] if "loss_mask" in schema.names else [])
    table = pq.read_table(path, columns=cols)

    def dense(name: str, dtype) -> np.ndarray:
        col = table.column(name).combine_chunks()
        n = len(col)
        if n == 0:
            return np.zeros((0, 0), dtype=dtype)
        offsets = col.offsets.to_numpy()
        width = int(offsets[1] - offsets[0])
        if not np.all(np.diff(offsets) == width):
            raise ValueError(f"{path}: rows of {name} differ in length; shards must be packed to seq_len+1")
        values = col.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
        return values.reshape(n, width).astype(dtype)

    ids = dense("input_ids", np.int64)
    mask = dense("loss_mask", np.uint8) if "loss_mask" in cols else None
    if mask is not None and mask.shape != ids.shape:
        raise ValueError(f"{path}: loss_mask and input_ids differ in shape")
    return ids, mask


# Stage 7 pads the last train row with id 0 (the tokenizer's <pad>); those targets must not be trained on.
PAD_ID = 0


def to_batch(ids: np.ndarray, mask: np.ndarray | None) -> Batch:
    t = torch.from_numpy(np.ascontiguousarray(ids))
    targets = t[:, 1:].contiguous()
    if mask is None:
        pad = targets == PAD_ID
        m = (~pad).float() if bool(pad.any()) else None
    else:
        m = torch.from_numpy(np.ascontiguousarray(mask[:, 1:])).float()
    return Batch(inputs=t[:, :-1].contiguous(), targets=targets, mask=m)


class TokenLoader:
    """Endless, seeded, resumable stream of batches over the train split."""

    def __init__(self, data_dir: str | Path, batch_size: int, seed: int, split: str = "train"):
        self.files = shard_files(data_dir, split)
        self.batch_size = batch_size
        self.seed = seed
        self.pos = LoaderPosition()
        self._loaded: tuple[int, int] | None = None  # (epoch, file index) of the cached file
        self._ids: np.ndarray | None = None
        self._mask: np.ndarray | None = None
        self._rows: np.ndarray | None = None

    def _file_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.files))

    def _load(self) -> None:
        fi = int(self._file_order(self.pos.epoch)[self.pos.file_cursor])
        if self._loaded == (self.pos.epoch, fi):
            return
        self._ids, self._mask = read_shard(self.files[fi])
        self._rows = np.random.default_rng([self.seed, self.pos.epoch, fi]).permutation(len(self._ids))
        self._loaded = (self.pos.epoch, fi)

    def next_batch(self) -> Batch:
        ids, masks, empty_files = [], [], 0
        while len(ids) < self.batch_size:
            self._load()
            if self.pos.row_cursor >= len(self._rows):
                empty_files = empty_files + 1 if self.pos.row_cursor == 0 else 0
                if empty_files > len(self.files):
                    raise ValueError("all train shards are empty")
                self.pos.file_cursor += 1
                self.pos.row_cursor = 0
                if self.pos.file_cursor >= len(self.files):
                    self.pos.epoch += 1
                    self.pos.file_cursor = 0
                continue
            r = int(self._rows[self.pos.row_cursor])
            ids.append(self._ids[r])
            if self._mask is not None:
                masks.append(self._mask[r])
            self.pos.row_cursor += 1
        self.pos.sequences_seen += self.batch_size
        return to_batch(np.stack(ids), np.stack(masks) if masks else None)

    def state_dict(self) -> dict:
        return asdict(self.pos)

    def load_state_dict(self, d: dict) -> None:
        self.pos = LoaderPosition(**d)


def val_batches(data_dir: str | Path, batch_size: int, n_batches: int) -> list[Batch]:
    """A fixed sample of about n_batches * batch_size val rows, the same every time, drawn evenly from every
    domain (the shards' `domain` column; one domain "" without it): each domain gives its first rows in file
    order, and each batch holds one domain's rows, so the loss can be reported per domain (`Batch.domain`).
    Val is written domain by domain, so taking the first rows in file order would score the first domain only."""
    if n_batches <= 0:
        return []
    rows: dict[str, list[tuple[np.ndarray, np.ndarray | None]]] = {}
    for f in shard_files(data_dir, "val"):
        fi, fm = read_shard(f)
        names = pq.read_schema(f).names
        doms = pq.read_table(f, columns=["domain"]).column("domain").to_pylist() if "domain" in names else [""] * len(fi)
        for r, d in enumerate(doms):
            rows.setdefault(d, []).append((fi[r], None if fm is None else fm[r]))
    if not rows:
        return []
    quota = -(-batch_size * n_batches // len(rows))  # ceil: every domain gets the same share
    out = []
    for d in sorted(rows):
        take = rows[d][:quota]
        for i in range(0, len(take), batch_size):
            chunk = take[i:i + batch_size]
            masks = [m for _, m in chunk]
            b = to_batch(np.stack([x for x, _ in chunk]), None if masks[0] is None else np.stack(masks))
            b.domain = d
            out.append(b)
    return out


def row_length(data_dir: str | Path) -> int:
    """Tokens per row (seq_len + 1) of the first train shard."""
    ids, _ = read_shard(shard_files(data_dir, "train")[0])
    return ids.shape[1]
