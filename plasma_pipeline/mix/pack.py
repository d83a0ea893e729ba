"""Packing of `[BOS] doc [EOS]` token streams into fixed rows of seq_len + 1 tokens, with per-token domains."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from plasma_pipeline.schema import TOKEN_SCHEMA

_FLUSH_ROWS = 64  # concatenate pending pieces once this many rows are ready (amortises np.concatenate)


class RowPacker:
    """Concatenates token chunks and cuts them into rows of `row_len`; remembers each token's domain index."""

    def __init__(self, row_len: int):
        self.row_len = row_len
        self._toks: list[np.ndarray] = []
        self._doms: list[np.ndarray] = []
        self.pending = 0

    def add(self, tokens: np.ndarray, domain_idx: int) -> None:
        if len(tokens):
            self._toks.append(tokens)
            self._doms.append(np.full(len(tokens), domain_idx, dtype=np.int16))
            self.pending += len(tokens)

    def rows(self, force: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
        """Complete rows (tokens, per-token domain) once enough are pending, or all complete rows with force."""
        k = self.pending // self.row_len
        if k == 0 or (not force and k < _FLUSH_ROWS):
            return None
        t = np.concatenate(self._toks)
        d = np.concatenate(self._doms)
        cut = k * self.row_len
        self._toks, self._doms = [t[cut:]], [d[cut:]]
        self.pending -= cut
        return t[:cut].reshape(k, self.row_len), d[:cut].reshape(k, self.row_len)

    def tail(self) -> tuple[np.ndarray, np.ndarray]:
        """The incomplete last row's tokens and domains (fewer than row_len); empties the packer."""
        t = np.concatenate(self._toks) if self._toks else np.zeros(0, np.int32)
        d = np.concatenate(self._doms) if self._doms else np.zeros(0, np.int16)
        self._toks, self._doms, self.pending = [], [], 0
        return t, d


def majority_domain(dom_rows: np.ndarray, n_domains: int) -> np.ndarray:
    """Per row, the domain index holding the most tokens (ties: lowest index); negative indices (pad) ignored."""
    counts = np.stack([(dom_rows == i).sum(axis=1) for i in range(n_domains)], axis=1)
    return counts.argmax(axis=1)


def rows_to_table(rows: np.ndarray, domains: list[str]) -> pa.Table:
    """A TOKEN_SCHEMA table from a (n, row_len) int array and the n row domain names (built from buffers, so
    a fresh worker process does not import pandas through pa.array)."""
    from plasma_pipeline.tokenizer.encode import arrow_strings

    n, row_len = rows.shape
    offsets = np.arange(n + 1, dtype=np.int32) * row_len
    values = np.ascontiguousarray(rows, dtype=np.int32).reshape(-1)
    ids = pa.ListArray.from_arrays(
        pa.Array.from_buffers(pa.int32(), n + 1, [None, pa.py_buffer(offsets)]),
        pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(values)]),
    )
    return pa.Table.from_arrays([ids, arrow_strings(domains)], schema=TOKEN_SCHEMA)
