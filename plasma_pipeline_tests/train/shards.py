"""Synthetic token shards in the data stages' layout (train/*.parquet, val/*.parquet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def write_shards(root: Path, *, seq_len: int = 32, vocab: int = 512, train_files: int = 3, rows_per_file: int = 24,
                 val_rows: int = 16, sft: bool = False, seed: int = 0) -> Path:
    """Rows of seq_len + 1 tokens drawn from a learnable pattern (so losses fall); SFT adds loss_mask."""
    rng = np.random.default_rng(seed)
    root = Path(root)

    def rows(n: int):
        starts = rng.integers(0, vocab, size=n)
        steps = rng.integers(1, 4, size=n)
        ids = (starts[:, None] + steps[:, None] * np.arange(seq_len + 1)[None, :]) % vocab
        noise = rng.random(ids.shape) < 0.1
        ids = np.where(noise, rng.integers(0, vocab, size=ids.shape), ids).astype(np.int32)
        cols = {"input_ids": pa.array(list(ids), type=pa.list_(pa.int32())),
                "domain": pa.array(["synthetic"] * n)}
        if sft:
            mask = np.zeros_like(ids, dtype=np.uint8)
            for r in range(n):
                a = rng.integers(2, seq_len // 2)
                b = rng.integers(a + 1, seq_len + 1)
                mask[r, a:b] = 1  # prompt before a, answer a..b, padding after b
            cols["loss_mask"] = pa.array(list(mask), type=pa.list_(pa.uint8()))
        return pa.table(cols)

    for split, files, n in (("train", train_files, rows_per_file), ("val", 1, val_rows)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(files):
            pq.write_table(rows(n), root / split / f"part-{i:05d}.parquet")
    (root / "manifest.json").write_text("{}")
    return root
