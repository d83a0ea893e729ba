"""Keep the evaluation battery out of the training data: its documents and their near-duplicates.

The battery is a deterministic function of the recipe (`battery_items(cfg)`): the first `eval_per_domain`
held-out items of each domain (`eval_prompts.eval_items`), the very items the evaluation stage prompts with and
the instructions stage decontaminates against. The dedup stage applies `Holdout` to its survivors, so the
tokenizer, the pretraining mix and the SFT instructions (which are built from the deduped documents) never see a
battery document.

Each battery item has a reference document: the text the collector writes for it (wiki: title and extract;
recipe: title, ingredients, steps; dialog: the A/B turns; code: the function's source; literature: the
paragraph). A corpus document is dropped, counted once under the first rule that hits:

- `dropped/eval_holdout`: it is a battery item's source document. Its id: the item parsed from its collector
  structure has the battery item's key (wiki / recipe title and dialog turns from `meta`; for code, the stdlib
  file holding the function). Or its text holds the item's text (lower-cased `\\w+` word sequences, the dedup
  normalisation: a paragraph inside a literature chunk, a copy inside another source). Or the same normalised
  text (the exact-dedup key);
- `dropped/eval_holdout_near_dup`: a near-duplicate of a reference document by the dedup signature: MinHash with
  the recipe's dedup parameters, a shared LSH band, confirmed by shingle Jaccard >= `dedup.confirm_threshold`
  (`dedup.core.ReferenceIndex`, the rule `dedup_tables` merges by).

Per source: `eval_holdout/<source>`, `eval_holdout_near_dup/<source>` (outside `dropped/`, so a drop is counted
once in the totals). `summary()` lists the dropped documents with the battery item each one matched.

Cost: a document is dropped whole. Where one document holds many items (a chatterbot topic file, a stdlib
module, an 8000-character play chunk), the other items go with it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from plasma_pipeline.collect.offline import dialog_text, recipe_text
from plasma_pipeline.dedup import minhash
from plasma_pipeline.dedup.config import DedupConfig
from plasma_pipeline.dedup.core import ReferenceIndex
from plasma_pipeline.instruct.config import InstructionsConfig
from plasma_pipeline.instruct.eval_prompts import eval_items
from plasma_pipeline.instruct.sources import code_relpath, doc_items, parse_meta

# Battery texts with fewer words are not searched for inside documents (too likely to occur by chance); they are
# still matched by id, exact text and near-duplicate signature.
MIN_SPAN_WORDS = 8
# Blank lines the literature collector splits paragraphs on (a line of spaces counts as blank there).
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
# Domains whose source documents are found by key: literature keys count paragraphs of a whole play, which a
# collected chunk does not know, so literature documents are found by their text.
KEY_DOMAINS = ("wiki", "recipes", "dialog", "code")
# Dropped documents listed in `summary()`.
MAX_LISTED = 200


def battery_items(cfg: InstructionsConfig, stdlib: str | None = None) -> list[dict[str, Any]]:
    """The battery the evaluation uses and the instructions stage decontaminates against, as items."""
    return eval_items(cfg.sources_root, per_domain=cfg.eval_per_domain, stdlib=stdlib)


def battery_config(cfg: InstructionsConfig) -> dict[str, Any]:
    """What the battery depends on in the recipe (the dedup asset folds it into its code version)."""
    return {"sources_root": cfg.sources_root, "eval_per_domain": cfg.eval_per_domain}


def reference_text(item: dict[str, Any]) -> str:
    """The battery item as its collector writes it as a document (what near-duplicates are measured against)."""
    d = item["domain"]
    if d == "wiki":
        return f"{item['title']}\n\n{item['extract']}"
    if d == "recipes":
        return recipe_text({"title": item["title"], "ingredients": item["ingredients"], "steps": item["steps"]})
    if d == "dialog":
        return dialog_text(item["turns"])
    if d == "code":
        return item.get("source") or f"{item['code']}\n{item['docstring']}"
    if d == "literature":
        return item.get("text") or "\n".join(item["lines"])
    raise ValueError(f"unknown domain {d!r}")


def item_spans(item: dict[str, Any]) -> list[str]:
    """Stretches of the item's text that stand verbatim in its source document: a document holding any one of them
    holds the item."""
    d = item["domain"]
    if d == "wiki":
        return [item["extract"]]
    if d == "recipes":
        return ["\n".join(f"{i}. {s}" for i, s in enumerate(item["steps"], 1))]
    if d == "dialog":  # as the collector writes it (A: / B: turns), and the bare turns
        return [dialog_text(item["turns"]), "\n".join(item["turns"])]
    if d == "code":
        return [item.get("source") or item["code"]]
    if d == "literature":
        # The battery splits plays on empty lines, the collector also on lines of spaces: each part of the
        # paragraph between such lines stands whole in one chunk.
        return [p for p in _PARAGRAPH_BREAK.split(item.get("text") or "\n".join(item["lines"])) if p.strip()]
    raise ValueError(f"unknown domain {d!r}")


def battery_id(item: dict[str, Any]) -> str:
    return f"{item['domain']}/{item['key']}"


class Holdout:
    """The battery's documents and signatures, matched against corpus tables shard by shard."""

    def __init__(self, items: Iterable[dict[str, Any]], dedup: DedupConfig, cfg: InstructionsConfig,
                 stdlib: str | None = None):
        self.items = list(items)
        self.dedup, self.cfg, self.stdlib = dedup, cfg, stdlib
        self.ids = [battery_id(it) for it in self.items]
        # domain -> {document key: battery item}; a code document's key is its stdlib file (item key: file:function)
        self.keys: dict[str, dict[str, int]] = {}
        for i, it in enumerate(self.items):
            if it["domain"] in KEY_DOMAINS:
                key = it["key"].rsplit(":", 1)[0] if it["domain"] == "code" else it["key"]
                self.keys.setdefault(it["domain"], {}).setdefault(key, i)
        refs = pa.table({
            dedup.id_field: pa.array(self.ids, pa.string()),
            dedup.source_field: pa.array([it["domain"] for it in self.items], pa.string()),
            dedup.text_field: pa.array([reference_text(it) for it in self.items], pa.string()),
        })
        self.index = ReferenceIndex(refs, dedup)
        # word-hash sequences to find inside documents, each with the battery item it belongs to
        spans = [(i, s) for i, it in enumerate(self.items) for s in item_spans(it)]
        wh, lens = minhash.word_hashes([s for _, s in spans], dedup.seed)
        bounds = np.r_[0, np.cumsum(lens)]
        self.spans = [(i, wh[bounds[k]:bounds[k + 1]]) for k, (i, _) in enumerate(spans)
                      if lens[k] >= MIN_SPAN_WORDS]
        self.dropped: list[dict[str, Any]] = []
        self.n_dropped = 0

    @classmethod
    def from_recipe(cls, cfg: InstructionsConfig, dedup: DedupConfig, stdlib: str | None = None) -> "Holdout":
        return cls(battery_items(cfg, stdlib), dedup, cfg, stdlib)

    def fingerprint(self) -> str:
        """A hash of the battery's items and reference texts."""
        blob = json.dumps([[b, reference_text(it)] for b, it in zip(self.ids, self.items)], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    # ------------------------------------------------------------------------------------------------ matching

    def _by_key(self, table: pa.Table, source: str) -> np.ndarray:
        """Per row: the battery item whose key its collector structure carries (-1: none)."""
        out = np.full(table.num_rows, -1, np.int64)
        domain = self.cfg.domain_of(source)
        keys = self.keys.get(domain) if domain in KEY_DOMAINS else None
        if not keys:
            return out
        texts = table.column(self.dedup.text_field).to_pylist()
        metas = table.column("meta").to_pylist() if "meta" in table.column_names else [None] * len(texts)
        urls = table.column("url").to_pylist() if "url" in table.column_names else [None] * len(texts)
        scratch: Counter = Counter()
        for row, (text, meta_s, url) in enumerate(zip(texts, metas, urls)):
            meta = parse_meta(meta_s)
            if domain == "code":  # the stdlib file that holds a battery function
                out[row] = keys.get(code_relpath(meta, url, self.stdlib) or "", -1)
                continue
            for it in doc_items(text or "", meta, url, domain, scratch, self.stdlib):
                if it["key"] in keys:
                    out[row] = keys[it["key"]]
                    break
        return out

    def _by_text(self, table: pa.Table) -> np.ndarray:
        """Per row: a battery item whose text (a span of at least MIN_SPAN_WORDS words) the row holds (-1: none)."""
        out = np.full(table.num_rows, -1, np.int64)
        if not self.spans or not table.num_rows:
            return out
        words, lens = minhash.word_hashes(table[self.dedup.text_field], self.dedup.seed)
        doc_of = np.repeat(np.arange(table.num_rows), lens)
        for item, seq in self.spans:
            m = len(seq)
            pos = np.flatnonzero(words[: len(words) - m + 1] == seq[0]) if len(words) >= m else np.zeros(0, np.int64)
            for k in range(1, m):
                if not len(pos):
                    break
                pos = pos[words[pos + k] == seq[k]]
            pos = pos[doc_of[pos] == doc_of[pos + m - 1]]  # the whole span inside one document
            hit = np.unique(doc_of[pos])
            out[hit[out[hit] < 0]] = item
        return out

    def match(self, table: pa.Table, source: str) -> tuple[np.ndarray, np.ndarray]:
        """(exact, near): per row of one source's table, the battery item it is a source document of, and the one
        it is a near-duplicate of (-1: none; a row with an exact hit has no near one)."""
        exact = self._by_key(table, source)
        by_text = self._by_text(table)
        exact = np.where(exact >= 0, exact, by_text)
        m = self.index.match(table)
        exact = np.where(exact >= 0, exact, m.exact)
        near = np.where(exact >= 0, -1, m.near)
        return exact, near

    def filter(self, table: pa.Table, source: str, stats: Counter) -> pa.Table:
        """The rows of one source's table that are neither a battery document nor a near-duplicate of one."""
        if not table.num_rows or not self.items:
            return table
        exact, near = self.match(table, source)
        n_exact, n_near = int((exact >= 0).sum()), int((near >= 0).sum())
        stats["dropped/eval_holdout"] += n_exact
        stats["dropped/eval_holdout_near_dup"] += n_near
        if n_exact:
            stats[f"eval_holdout/{source}"] += n_exact
        if n_near:
            stats[f"eval_holdout_near_dup/{source}"] += n_near
        drop = (exact >= 0) | (near >= 0)
        if not drop.any():
            return table
        ids = table.column(self.dedup.id_field).to_pylist()
        for row in np.flatnonzero(drop).tolist():
            self.n_dropped += 1
            if len(self.dropped) < MAX_LISTED:
                hit = exact[row] if exact[row] >= 0 else near[row]
                self.dropped.append({"id": ids[row], "source": source, "battery_item": self.ids[hit],
                                     "rule": "source_document" if exact[row] >= 0 else "near_duplicate"})
        return table.filter(pa.array(~drop))

    def merge(self, dropped: list[dict[str, Any]], n_dropped: int) -> None:
        """Count the drops another copy of this hold-out made (a shard worker's), after those counted so far: the
        listed ones stay capped at MAX_LISTED and in merge order."""
        self.n_dropped += n_dropped
        self.dropped.extend(dropped[: max(0, MAX_LISTED - len(self.dropped))])

    def summary(self) -> dict[str, Any]:
        """For the version's metadata: the battery, and the documents dropped so far with what they matched."""
        found = sorted({d["battery_item"] for d in self.dropped})
        return {
            "battery_items": len(self.items),
            "battery_fingerprint": self.fingerprint(),
            "battery_config": battery_config(self.cfg),
            "items_with_documents_dropped": len(found),
            "documents_dropped": self.n_dropped,
            "dropped": self.dropped,
        }
