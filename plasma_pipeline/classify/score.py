"""Stage 4: score every clean document for quality and toxicity and drop by per-source thresholds.

Columns added (SCORED_SCHEMA):
* `quality`  = P(__label__hq) from the quality model on the document's first `max_chars` characters.
* `toxicity` = max(P(__label__toxic) from the toxicity model, word-list signal), where the word-list signal is
  1 - 0.5 ** hits (0 hits -> 0, 1 -> 0.5, 2 -> 0.75, 3 -> 0.875, ...) and `hits` counts label-term occurrences
  in the whole text, with the terms of the document's own language (its `lang` column; see wordlist.py). A
  document whose language has no list gets no word-list signal and is counted as `wordlist_unavailable/<lang>`.
  The model sees a whole document while it was trained on sentences; the word-list signal keeps a few explicit
  terms in a long document from being averaged away.

Each dropped document is counted under exactly one reason, checked in this order: `dropped/wordlist`
(hits > wordlist_max_hits), `dropped/toxic` (toxicity > max_toxicity), `dropped/low_quality`
(quality < min_quality); so kept + the dropped counters = rows in. `fail/<reason>` counts every document failing
a rule, overlaps included, and is also counted when `enabled` is off (score only, drop nothing).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from plasma_pipeline.classify.fasttext_model import CLASSIFIER_INFO, load_model, predict_proba, read_classifier_info
from plasma_pipeline.classify.quality import QUALITY_POSITIVE
from plasma_pipeline.classify.toxicity import TOXIC
from plasma_pipeline.classify.wordlist import LanguageWordlists, Wordlist
from plasma_pipeline.schema import SCORED_SCHEMA

_WORDLIST_CACHE: dict[tuple[str, int, int], Wordlist] = {}
_LANG_WORDLISTS_CACHE: dict[tuple[str, int, int], dict[str, Wordlist]] = {}


@dataclass
class ScoreConfig:
    enabled: bool = True  # False: compute the scores but drop nothing
    min_quality: float = 0.0  # drop docs with P(hq) below this (0 keeps all)
    max_toxicity: float = 0.9  # drop docs with toxicity above this (1 keeps all)
    wordlist_max_hits: int = 3  # drop docs with more label-term hits than this; -1 disables the rule
    max_chars: int = 4000  # characters of each doc the models see

    def __post_init__(self):
        if not isinstance(self.enabled, bool):
            raise ValueError(f"enabled: expected true or false, got {self.enabled!r}")
        if not 0.0 <= self.min_quality <= 1.0:
            raise ValueError(f"min_quality: must be in [0, 1], got {self.min_quality}")
        if not 0.0 <= self.max_toxicity <= 1.0:
            raise ValueError(f"max_toxicity: must be in [0, 1], got {self.max_toxicity}")
        if not isinstance(self.wordlist_max_hits, int) or self.wordlist_max_hits < -1:
            raise ValueError(f"wordlist_max_hits: must be an integer >= -1, got {self.wordlist_max_hits!r}")
        if not isinstance(self.max_chars, int) or self.max_chars < 1:
            raise ValueError(f"max_chars: must be a positive integer, got {self.max_chars!r}")


def load_wordlist(path: str | Path) -> Wordlist:
    """A word-list file (e.g. the toxicity asset's wordlist.txt), loaded once per process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_mtime_ns, st.st_size)
    if key not in _WORDLIST_CACHE:
        _WORDLIST_CACHE[key] = Wordlist.load(p)
    return _WORDLIST_CACHE[key]


def load_lang_wordlists(toxicity_dir: str | Path) -> LanguageWordlists | None:
    """The toxicity asset's word lists by language: wordlist.txt for English, classifier.json's
    `wordlist_terms_by_lang` for the others (an asset without it: English only); loaded once per process."""
    info = read_classifier_info(toxicity_dir)
    if not info.get("wordlist_file"):
        return None
    by_lang = {"en": load_wordlist(Path(toxicity_dir) / info["wordlist_file"])}
    p = (Path(toxicity_dir) / CLASSIFIER_INFO).resolve()
    if p.exists():
        st = p.stat()
        key = (str(p), st.st_mtime_ns, st.st_size)
        if key not in _LANG_WORDLISTS_CACHE:
            _LANG_WORDLISTS_CACHE[key] = {lang: Wordlist.from_terms(terms)
                                          for lang, terms in (info.get("wordlist_terms_by_lang") or {}).items()}
        by_lang.update(_LANG_WORDLISTS_CACHE[key])
    return LanguageWordlists(by_lang)


def wordlist_hits(texts: list, langs: list, wordlists: LanguageWordlists, stats: Counter) -> np.ndarray:
    """Label-term hits of each text with its own language's list; 0 (and `wordlist_unavailable/<lang>`) when the
    language has none."""
    hits = np.zeros(len(texts), dtype=np.int64)
    for i, (text, lang) in enumerate(zip(texts, langs)):
        wl = wordlists.for_lang(lang)
        if wl is None:
            stats[f"wordlist_unavailable/{lang}"] += 1
        else:
            hits[i] = wl.count(text or "")
    return hits


def wordlist_signal(hits: np.ndarray) -> np.ndarray:
    return 1.0 - np.power(0.5, hits.astype(np.float64))


def score_table(table: pa.Table, quality_model_path: str | Path, toxicity_model_path: str | Path,
                wordlist: LanguageWordlists | Wordlist | str | Path | None, cfg: ScoreConfig,
                stats: Counter) -> pa.Table:
    """Score a CLEAN_SCHEMA table and return the kept rows as SCORED_SCHEMA.

    `wordlist`: the lists by language, or one list (a `Wordlist` or a file), which is the English one."""
    n = table.num_rows
    stats["scored"] += n
    texts = table.column("text").to_pylist()
    quality = predict_proba(load_model(quality_model_path), texts, QUALITY_POSITIVE, cfg.max_chars)
    tox_model = predict_proba(load_model(toxicity_model_path), texts, TOXIC, cfg.max_chars)
    if wordlist is None:
        hits = np.zeros(n, dtype=np.int64)
    else:
        if isinstance(wordlist, LanguageWordlists):
            wls = wordlist
        else:
            wls = LanguageWordlists.english(wordlist if isinstance(wordlist, Wordlist) else load_wordlist(wordlist))
        langs = table.column("lang").to_pylist() if "lang" in table.column_names else [None] * n
        hits = wordlist_hits(texts, langs, wls, stats)
    toxicity = np.maximum(tox_model, wordlist_signal(hits))
    stats["wordlist_hits"] += int(hits.sum())
    stats["docs_with_wordlist_hit"] += int((hits > 0).sum())

    fail_wordlist = hits > cfg.wordlist_max_hits if cfg.wordlist_max_hits >= 0 else np.zeros(n, dtype=bool)
    fail_toxic = toxicity > cfg.max_toxicity
    fail_quality = quality < cfg.min_quality
    for name, mask in (("wordlist", fail_wordlist), ("toxic", fail_toxic), ("low_quality", fail_quality)):
        stats[f"fail/{name}"] += int(mask.sum())

    keep = np.ones(n, dtype=bool)
    if cfg.enabled:
        remaining = keep.copy()
        for name, mask in (("wordlist", fail_wordlist), ("toxic", fail_toxic), ("low_quality", fail_quality)):
            drop = remaining & mask
            stats[f"dropped/{name}"] += int(drop.sum())
            remaining &= ~drop
        keep = remaining
    stats["kept"] += int(keep.sum())

    out = table.append_column(pa.field("quality", pa.float32()), pa.array(quality.astype(np.float32)))
    out = out.append_column(pa.field("toxicity", pa.float32()), pa.array(toxicity.astype(np.float32)))
    out = out.filter(pa.array(keep))
    return out.select(SCORED_SCHEMA.names).cast(SCORED_SCHEMA)


def score_shard(table: pa.Table, quality_dir: str | Path, toxicity_dir: str | Path, cfg: ScoreConfig,
                stats: Counter) -> pa.Table:
    """`score_table` given the two classifier asset folders (model files named by their classifier.json)."""
    q = read_classifier_info(quality_dir)
    t = read_classifier_info(toxicity_dir)
    return score_table(table, Path(quality_dir) / q["model_file"], Path(toxicity_dir) / t["model_file"],
                       load_lang_wordlists(toxicity_dir), cfg, stats)
