"""Find the documents of a corpus that the dedup would merge with one of a few reference documents (an evaluation
battery, a block list): the same exact key, or a shared LSH band confirmed by the true shingle Jaccard."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from plasma_pipeline.dedup.config import DedupConfig
from plasma_pipeline.dedup.lsh import pair_jaccard
from plasma_pipeline.dedup.signatures import ShardSignatures, shingle_sets, signature_shard


@dataclass
class ReferenceMatch:
    """Per document of a matched table: the reference it duplicates (-1: none)."""

    exact: np.ndarray  # reference with the same normalised text (the exact-dedup key), else -1
    near: np.ndarray  # most similar reference sharing an LSH band, confirmed by shingle Jaccard, else -1
    jaccard: np.ndarray  # that pair's shingle Jaccard (nan when none, or when confirmation is off)


class ReferenceIndex:
    """A few reference documents (an evaluation battery, a block list) indexed by the dedup signature, to find the
    documents of a corpus that `dedup_tables` would merge with one of them: the same exact key, or a shared LSH
    band confirmed by the true shingle Jaccard >= `confirm_threshold` (any shared band when it is 0). Same
    normalisation, shingles, MinHash kernel, bands and seed as the dedup stage; `match` is called per shard.

    `references` has the config's id, source and text columns."""

    def __init__(self, references: pa.Table, cfg: DedupConfig):
        self.cfg = cfg
        self.ids = references[cfg.id_field].to_pylist()
        # band -> {band hash: reference indices}; references without a single word stay out of LSH
        self.bands: list[dict[int, list[int]]] = [{} for _ in range(cfg.bands)]
        self.exact = np.zeros(0, np.uint64)
        self.flat, self.counts = np.zeros(0, np.uint64), np.zeros(0, np.int64)
        if references.num_rows:
            sig = signature_shard(references, cfg)
            self.exact = sig.exact
            for r in np.flatnonzero(sig.has_shingles).tolist():
                for b in range(cfg.bands):
                    self.bands[b].setdefault(int(sig.bands[r, b]), []).append(r)
            self.flat, self.counts = shingle_sets(references[cfg.text_field], cfg)
        self._band_keys = [np.fromiter(d, np.uint64, len(d)) for d in self.bands]

    def __len__(self) -> int:
        return len(self.ids)

    def match(self, table: pa.Table, sig: ShardSignatures | None = None) -> ReferenceMatch:
        """Exact and confirmed near duplicates of the references among `table`'s rows (`sig`: its signatures,
        when the caller has them already)."""
        cfg, n = self.cfg, table.num_rows
        exact = np.full(n, -1, np.int64)
        near = np.full(n, -1, np.int64)
        jac_out = np.full(n, np.nan)
        if n == 0 or not len(self):
            return ReferenceMatch(exact, near, jac_out)
        sig = sig or signature_shard(table, cfg)
        order = np.argsort(self.exact, kind="stable")
        pos = np.minimum(np.searchsorted(self.exact[order], sig.exact), len(order) - 1)
        hit = self.exact[order][pos] == sig.exact
        exact[hit] = order[pos[hit]]

        docs, refs = [], []
        for b in range(cfg.bands):
            if not len(self._band_keys[b]):
                continue
            col = sig.bands[:, b]
            for d in np.flatnonzero(np.isin(col, self._band_keys[b]) & sig.has_shingles).tolist():
                for r in self.bands[b][int(col[d])]:
                    docs.append(d)
                    refs.append(r)
        if not docs:
            return ReferenceMatch(exact, near, jac_out)
        pairs = np.unique(np.array(docs, np.int64) * len(self) + np.array(refs, np.int64))
        d_idx, r_idx = pairs // len(self), pairs % len(self)
        if cfg.confirm_threshold > 0:
            need = np.unique(d_idx)
            flat_d, counts_d = shingle_sets(table[cfg.text_field].take(pa.array(need)), cfg)
            flat = np.concatenate([self.flat, flat_d])
            counts = np.concatenate([self.counts, counts_d])
            starts = np.zeros(len(counts), np.int64)
            np.cumsum(counts[:-1], out=starts[1:])
            jac = pair_jaccard(r_idx, len(self) + np.searchsorted(need, d_idx), flat, starts, counts)
            ok = jac >= cfg.confirm_threshold
        else:
            jac = np.full(len(pairs), np.nan)
            ok = np.ones(len(pairs), bool)
        # per document the most similar confirmed reference (ties, and no confirmation: the first reference)
        for d, r, j in zip(d_idx[ok].tolist(), r_idx[ok].tolist(), jac[ok].tolist()):
            if near[d] < 0 or j > jac_out[d]:
                near[d], jac_out[d] = r, j
        return ReferenceMatch(exact, near, jac_out)
