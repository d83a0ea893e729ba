"""Decontamination: drop instructions that overlap the held-out evaluation battery.

Texts are normalised to lower-case word tokens (`\\w+`). The index holds word n-grams of each eval item's
context (the source text shown in its prompt: title, code, user turn, passage) and reference, but never the
template words around them, so a shared phrasing such as "Write a docstring for this function" is no overlap.
Two tiers, by the length of the eval text:
- long texts (>= `long_min_words` words: wiki extracts, recipe steps, passages, code): 13-grams, as in GPT-3's
  contamination study. 8-grams are too short there: recipes share boilerplate such as "preheat the oven to 350 f
  180 c", which flagged 74 unrelated recipes in a trial run;
- short texts (n_short..long_min_words-1 words: chat turns, docstrings): 8-grams (PaLM's size); a 13-gram test
  could never see an overlap in a 12-word reference;
- very short texts (`min_words`..n_short-1 words, e.g. "What is AI?"): a message that equals the text after
  normalisation.
An instruction is contaminated when any message (user or assistant) hits any tier.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


@dataclass
class EvalIndex:
    """N-grams and whole short texts of the eval battery."""

    n_long: int = 13
    n_short: int = 8
    long_min_words: int = 30
    min_words: int = 3
    grams_long: set[tuple[str, ...]] = field(default_factory=set)
    grams_short: set[tuple[str, ...]] = field(default_factory=set)
    whole: set[tuple[str, ...]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not (self.min_words <= self.n_short <= self.n_long <= self.long_min_words):
            raise ValueError("decontamination sizes must satisfy min_words <= n_short <= n_long <= long_min_words")

    @classmethod
    def build(cls, prompts: Iterable[dict[str, Any]], **sizes: int) -> "EvalIndex":
        idx = cls(**sizes)
        for p in prompts:
            for text in (p.get("context", p["prompt"]), p["reference"]):
                idx.add(text)
        return idx

    def add(self, text: str) -> None:
        toks = words(text)
        if len(toks) >= self.long_min_words:
            self.grams_long |= ngrams(toks, self.n_long)
        elif len(toks) >= self.n_short:
            self.grams_short |= ngrams(toks, self.n_short)
        elif len(toks) >= self.min_words:
            self.whole.add(tuple(toks))

    def hit(self, text: str) -> bool:
        toks = words(text)
        if tuple(toks) in self.whole:
            return True
        for n, grams in ((self.n_long, self.grams_long), (self.n_short, self.grams_short)):
            if grams and any(tuple(toks[i : i + n]) in grams for i in range(len(toks) - n + 1)):
                return True
        return False

    def contaminated(self, messages: Iterable[dict[str, str]]) -> bool:
        return any(self.hit(m["content"]) for m in messages)


def decontaminate_table(table: pa.Table, index: EvalIndex, stats: Counter) -> pa.Table:
    """Keep the instruction rows that share nothing with the battery; counts dropped/decontaminated[/<source>]."""
    keep = []
    for msgs, src in zip(table.column("messages").to_pylist(), table.column("source").to_pylist()):
        bad = index.contaminated(msgs)
        keep.append(not bad)
        if bad:
            stats["dropped/decontaminated"] += 1
            stats[f"dropped/decontaminated/{src}"] += 1
    return table.filter(pa.array(keep, type=pa.bool_()))
