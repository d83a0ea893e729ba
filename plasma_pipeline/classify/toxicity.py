"""Stage 3b: a toxicity classifier, a supervised fastText model of toxic versus clean sentences, plus a word list.

No human-labelled toxicity set (Jigsaw, Civil Comments) is available offline, so labels are made from word lists,
and that is stated in the metadata (`label_construction`, `circularity`):

* Label terms: the terms found in every configured list (`label_terms_rule: intersection`; default lists:
  better-profanity's 916 entries and LDNOOBW's 403 English terms, 159 shared), minus `label_term_exclude`
  (clinical or ambiguous words such as "sex", "penis", "rape", "tit" that are common in encyclopedic text).
  These are also the terms `score_table` counts in English documents (written to `out_dir/wordlist.txt`).
* Other languages: `score_table` matches a document only against its own language's list (see wordlist.py). Those
  lists are LDNOOBW's per-language files in `lang_wordlists_dir` (one list per language, so there is no second
  list to intersect with) minus `label_term_exclude`; they are stored in classifier.json (`wordlist_terms_by_lang`)
  and do not change the labels or the model, which stay English. On the fetched wiki summaries the French list
  hits 9 of 9,955 and the Spanish one 75 of 6,239, mostly encyclopedic words ("nazi", "sexo", "asesinato"; 1 summary
  over wordlist_max_hits), against 27 of 10,033 English summaries for the English label terms: without a second
  list to intersect with, these lists are noisier. Add such words to label_term_exclude, or set
  `lang_wordlists_dir: null` so that only English documents get a list.
* Toxic: every sentence with a label term, from the offensive corpus (npm nlp-corpus: rap lyrics, Reddit
  arguments, jokes, SMS, reviews...) or from a clean source.
* Clean: sentences from `clean_sources` with no label term, plus nlp-corpus sentences with no label term (hard
  negatives from the same mixed, informal distribution as the toxic ones, so the model cannot just learn
  "informal versus encyclopedic"). nlp-corpus sentences hitting only the broader union of the lists ("god",
  "kill", "hell", ...) are labelled clean and counted as `offensive_corpus_broad_only`.

nlp-corpus 4.4.0 ships its 100 builds as random mixes of all its sub-corpora with no per-sentence tag, so its
offensive parts cannot be selected by file; the word-list rule above is what selects them.

Because labels come from the word list, held-out precision/recall mostly measure how well the model re-learns the
list. A second measure is less circular: `term_holdout_fraction` of the label terms are hidden from a second
model (every sentence containing one is removed from its training data); its recall on held-out toxic sentences
whose only label terms are hidden ones shows what the model learned beyond the words themselves.
"""

from __future__ import annotations

import glob
import json
import random
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from plasma_pipeline.classify.fasttext_model import (
    Example,
    FastTextParams,
    LowestHashSample,
    evaluate,
    iter_docs,
    predict_proba,
    save_model,
    split_holdout,
    train_fasttext,
    unit_hash,
    write_classifier_info,
)
from plasma_pipeline.classify.quality import SWEEP, check_fasttext_fields
from plasma_pipeline.classify.wordlist import LanguageWordlists, Wordlist, naughty_words_files, read_terms, tokens

TOXIC, CLEAN = "toxic", "clean"

DEFAULT_WORDLISTS = ["better_profanity", "data/sources/npm/naughty-words/package/en.json"]
DEFAULT_OFFENSIVE_GLOB = "data/sources/npm/nlp-corpus/package/builds/doc-*.json"
DEFAULT_LANG_WORDLISTS_DIR = "data/sources/npm/naughty-words/package"  # LDNOOBW: <code>.json per language
# Shared by both default lists but clinical, historical or ambiguous ("tit" is a bird, "snatch" a verb, "negro" a
# river and a period term, "xx" a chromosome pair); these would label encyclopedic sentences toxic.
DEFAULT_LABEL_TERM_EXCLUDE = [
    "anus", "bondage", "clitoris", "ejaculation", "erotic", "erotism", "homoerotic", "incest", "negro", "nipple",
    "nipples", "nude", "pedophile", "penis", "playboy", "pornography", "rape", "raping", "rapist", "rectum",
    "sadism", "semen", "sex", "sexual", "snatch", "suck", "tit", "vagina", "viagra", "voyeur", "vulva", "xx",
]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])|\n+")


@dataclass
class ToxicityClassifierConfig:
    # recipe sources giving clean sentences (left empty, the asset uses the quality classifier's positive_sources)
    clean_sources: list[str] = field(default_factory=list)
    offensive_corpus_glob: str = DEFAULT_OFFENSIVE_GLOB  # JSON arrays of sentences (npm nlp-corpus builds)
    wordlists: list[str] = field(default_factory=lambda: list(DEFAULT_WORDLISTS))  # files, or "better_profanity"
    label_terms_rule: str = "intersection"  # label terms: in every list ("intersection") or in any ("union")
    label_term_exclude: list[str] = field(default_factory=lambda: list(DEFAULT_LABEL_TERM_EXCLUDE))  # never label terms
    # folder of per-language lists (<code>.json) for non-English documents; null = only English documents get a list
    lang_wordlists_dir: str | None = DEFAULT_LANG_WORDLISTS_DIR
    max_sentences_per_class: int = 4000  # per class, a seeded order-independent sample of this many sentences
    curated_clean_share: float = 0.5  # share of the clean class taken from clean_sources (rest: nlp-corpus)
    balance_classes: bool = True  # repeat training sentences of the smaller class so both classes weigh the same
    min_words: int = 3  # sentences with fewer word tokens are skipped
    max_chars: int = 1000  # characters of each text the model sees
    holdout_fraction: float = 0.2  # share of sampled sentences held out for precision/recall
    term_holdout_fraction: float = 0.25  # share of label terms hidden from a 2nd model to test generalisation; 0 = off
    epoch: int = 10  # fastText epochs
    lr: float = 0.1  # fastText learning rate
    wordNgrams: int = 2  # fastText word n-gram length
    dim: int = 32  # fastText embedding size (even, so the model can be quantised)
    bucket: int = 200000  # fastText hash buckets for n-grams
    minCount: int = 1  # fastText minimum word count
    quantize: bool = False  # also write model.ftz (product-quantised; ~20 s with the cutoff, ~70 s without)
    quantize_cutoff: int = 20000  # rows (words + n-grams) kept when quantising, then retrained; 0 keeps all
    seed: int = 0  # sampling, hold-out split, term hold-out and fastText seed

    def __post_init__(self):
        for name in ("clean_sources", "wordlists", "label_term_exclude"):
            v = getattr(self, name)
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise ValueError(f"{name}: expected a list of strings, got {v!r}")
        if not self.wordlists:
            raise ValueError("wordlists: at least one word list is required")
        if self.lang_wordlists_dir is not None and (not isinstance(self.lang_wordlists_dir, str)
                                                    or not self.lang_wordlists_dir):
            raise ValueError(f"lang_wordlists_dir: expected a folder path or null, got {self.lang_wordlists_dir!r}")
        if self.label_terms_rule not in ("intersection", "union"):
            raise ValueError(f"label_terms_rule: must be 'intersection' or 'union', got {self.label_terms_rule!r}")
        if not 0.0 <= self.curated_clean_share <= 1.0:
            raise ValueError(f"curated_clean_share: must be in [0, 1], got {self.curated_clean_share}")
        if not 0.0 <= self.term_holdout_fraction < 1.0:
            raise ValueError(f"term_holdout_fraction: must be in [0, 1), got {self.term_holdout_fraction}")
        if not isinstance(self.min_words, int) or self.min_words < 1:
            raise ValueError(f"min_words: must be a positive integer, got {self.min_words!r}")
        check_fasttext_fields(self)

    def params(self) -> FastTextParams:
        return FastTextParams(self.epoch, self.lr, self.wordNgrams, self.dim, self.bucket, self.minCount, self.seed,
                              self.max_chars)


def build_wordlists(cfg: ToxicityClassifierConfig) -> tuple[Wordlist, Wordlist, dict]:
    """(label terms, union of all lists, description). Label terms are what labels and `score_table` use."""
    lists = {name: Wordlist.from_terms(read_terms(name)) for name in cfg.wordlists}
    sets = [wl.terms for wl in lists.values()]
    union = frozenset().union(*sets)
    chosen = frozenset.intersection(*sets) if cfg.label_terms_rule == "intersection" else union
    exclude = Wordlist.from_terms(cfg.label_term_exclude).terms
    label = Wordlist(chosen - exclude)
    info = {
        "lists": {name: len(wl) for name, wl in lists.items()},
        "union_terms": len(union),
        "rule": cfg.label_terms_rule,
        "rule_terms": len(chosen),
        "excluded": sorted(" ".join(t) for t in chosen & exclude),
        "label_terms": len(label),
    }
    return label, Wordlist(union), info


def build_lang_wordlists(cfg: ToxicityClassifierConfig) -> tuple[dict[str, Wordlist], dict[str, int]]:
    """({language: terms} for the non-English languages of `lang_wordlists_dir`, {language: term count}); each
    list is that language's file minus `label_term_exclude`. Empty when `lang_wordlists_dir` is null."""
    if cfg.lang_wordlists_dir is None:
        return {}, {}
    try:
        files = naughty_words_files(cfg.lang_wordlists_dir)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"lang_wordlists_dir: {e}") from None
    exclude = Wordlist.from_terms(cfg.label_term_exclude).terms
    lists = LanguageWordlists({lang: Wordlist(Wordlist.load(path).terms - exclude)
                               for lang, path in files.items() if lang != "en"})
    return lists.by_lang, {lang: len(wl) for lang, wl in lists.by_lang.items()}


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def iter_offensive_corpus(pattern: str) -> Iterable[tuple[str, str]]:
    """(key, sentence) from every JSON array file matching `pattern` (relative to the cwd or the repo root)."""
    files = sorted(glob.glob(pattern))
    if not files and not Path(pattern).is_absolute():
        files = sorted(glob.glob(str(Path(__file__).resolve().parents[2] / pattern)))
    if not files:
        raise FileNotFoundError(f"offensive_corpus_glob: no file matches {pattern!r} "
                                "(run scripts/fetch_sources.py to fetch npm nlp-corpus)")
    for f in files:
        data = json.loads(Path(f).read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"offensive_corpus_glob: {f} is not a JSON array of sentences")
        stem = Path(f).stem
        for i, s in enumerate(data):
            if isinstance(s, str):
                yield f"{stem}:{i}", s


def train_toxicity_classifier(clean_text: Iterable[pa.Table], cfg: ToxicityClassifierConfig, out_dir: Path,
                              stats: Counter) -> dict:
    """Train toxic-vs-clean fastText; write out_dir/model.bin (+ .ftz) and out_dir/wordlist.txt; return metadata."""
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    label_wl, union_wl, wl_info = build_wordlists(cfg)
    label_wl.save(out_dir / "wordlist.txt")
    lang_wls, wl_info["by_lang"] = build_lang_wordlists(cfg)

    n = cfg.max_sentences_per_class
    n_curated = round(cfg.curated_clean_share * n)
    toxic = LowestHashSample(n, cfg.seed)
    clean_curated = LowestHashSample(n_curated, cfg.seed)
    clean_corpus = LowestHashSample(n - n_curated, cfg.seed)
    origins: Counter = Counter()

    def offer(key: str, source: str, text: str, from_corpus: bool) -> None:
        toks = tokens(text)
        if len(toks) < cfg.min_words:
            stats["skipped/too_few_words"] += 1
            return
        if label_wl.find_tokens(toks):
            origin = "offensive_corpus_term" if from_corpus else "clean_source_term"
            toxic.offer(key, Example(key, source, text, TOXIC, origin))
        elif from_corpus:
            origin = "offensive_corpus_broad_only" if union_wl.find_tokens(toks) else "offensive_corpus_no_hit"
            clean_corpus.offer(key, Example(key, source, text, CLEAN, origin))
        else:
            origin = "clean_source"
            clean_curated.offer(key, Example(key, source, text, CLEAN, origin))
        origins[origin] += 1

    for key, sentence in iter_offensive_corpus(cfg.offensive_corpus_glob):
        offer(f"nlp-corpus/{key}", "nlp-corpus", sentence, True)
    clean_docs_by_source: Counter = Counter()
    for doc_id, source, text in iter_docs(clean_text):
        clean_docs_by_source[source] += 1
        for j, sentence in enumerate(split_sentences(text)):
            offer(f"{source}/{doc_id}#{j}", source, sentence, False)

    pos = toxic.items()
    neg = clean_curated.items() + clean_corpus.items()
    if not pos or not neg:
        raise ValueError(
            f"toxicity classifier needs sentences of both classes (got {len(pos)} toxic, {len(neg)} clean)"
        )
    pos_train, pos_hold = split_holdout(pos, cfg.holdout_fraction, cfg.seed)
    neg_train, neg_hold = split_holdout(neg, cfg.holdout_fraction, cfg.seed)
    train = pos_train + neg_train + (_repeat_smaller(pos_train, neg_train) if cfg.balance_classes else [])
    random.Random(cfg.seed).shuffle(train)
    hold = pos_hold + neg_hold
    y = np.array([ex.label == TOXIC for ex in hold])
    texts = [ex.text for ex in hold]

    model, train_file = train_fasttext(train, cfg.params(), out_dir)
    try:
        p = predict_proba(model, texts, TOXIC, cfg.max_chars)
        held_out = evaluate(y, p, SWEEP)
        held_out["by_origin"] = _by_origin(hold, p)
        files = save_model(model, out_dir, train_file, cfg.quantize, cfg.quantize_cutoff)
        model_file, held_out_ftz = "model.bin", None
        if "ftz" in files:
            held_out_ftz = evaluate(y, predict_proba(model, texts, TOXIC, cfg.max_chars), (0.5,))
            if held_out_ftz["at_0.5"]["f1"] >= held_out["at_0.5"]["f1"] - 0.01:
                model_file = "model.ftz"
    finally:
        Path(train_file).unlink(missing_ok=True)

    term_holdout = _term_holdout_eval(train, hold, label_wl, cfg, out_dir) if cfg.term_holdout_fraction > 0 else None

    write_classifier_info(out_dir, {"model_file": model_file, "label": TOXIC, "max_chars": cfg.max_chars,
                                    "wordlist_file": "wordlist.txt",
                                    "wordlist_terms_by_lang": {lang: sorted(" ".join(t) for t in wl.terms)
                                                               for lang, wl in lang_wls.items()}})
    stats["train/toxic"] += len(pos_train)
    stats["train/clean"] += len(neg_train)
    stats["holdout/sentences"] += len(hold)
    return {
        "model_file": model_file,
        "files": sorted([*files.values(), "classifier.json", "wordlist.txt"]),
        "wordlist_file": "wordlist.txt",
        "labels": {"positive": f"__label__{TOXIC}", "negative": f"__label__{CLEAN}"},
        "label_construction": _label_text(cfg, wl_info, sorted(clean_docs_by_source)),
        "circularity": (
            "Toxic labels are word-list hits, so held_out precision/recall are partly circular: they largely "
            "measure how well the model re-learns the list, and say nothing about toxicity without list terms "
            "(insults, threats, hate in polite words). term_holdout is the less circular measure: recall on "
            "toxic sentences whose label terms were never seen in training."
        ),
        "wordlists": wl_info,
        "clean_sources": cfg.clean_sources,  # as configured; the tables actually given are in clean_docs_by_source
        "clean_docs_by_source": dict(clean_docs_by_source),
        "counts": {
            "sentences_by_origin": dict(origins),
            "sampled": {"toxic": len(pos), "clean_curated": len(clean_curated.items()),
                        "clean_offensive_corpus": len(clean_corpus.items())},
            "sampled_by_origin": dict(Counter(ex.origin for ex in pos + neg)),
            "train": {"toxic": len(pos_train), "clean": len(neg_train),
                      "repeated_for_balance": len(train) - len(pos_train) - len(neg_train)},
            "holdout": {"toxic": len(pos_hold), "clean": len(neg_hold)},
        },
        "held_out": held_out,
        "held_out_quantized": held_out_ftz,
        "term_holdout": term_holdout,
        "fasttext": {k: getattr(cfg, k) for k in ("epoch", "lr", "wordNgrams", "dim", "bucket", "minCount", "seed")}
        | {"thread": 1, "max_chars": cfg.max_chars},
        "train_seconds": round(time.time() - t0, 2),
    }


def _repeat_smaller(a: list[Example], b: list[Example]) -> list[Example]:
    """Extra copies of the smaller list (cycled) so that it matches the larger one in size."""
    small, big = (a, b) if len(a) < len(b) else (b, a)
    if not small:
        return []
    return [small[i % len(small)] for i in range(len(big) - len(small))]


def _term_holdout_eval(train: list[Example], hold: list[Example], label_wl: Wordlist,
                       cfg: ToxicityClassifierConfig, out_dir: Path) -> dict:
    """Hide a seeded share of the label terms from a second model; measure recall on toxic sentences using only them."""
    hidden = frozenset(t for t in label_wl.terms if unit_hash(cfg.seed + 31, " ".join(t)) < cfg.term_holdout_fraction)
    hidden_wl = Wordlist(hidden)
    seen_wl = Wordlist(label_wl.terms - hidden)
    # No training sentence may contain a hidden term: the model never sees those words at all.
    train_b = [ex for ex in train if not hidden_wl.find(ex.text)]
    model, train_file = train_fasttext(train_b, cfg.params(), out_dir)
    Path(train_file).unlink(missing_ok=True)
    unseen_toxic = [ex for ex in hold if ex.label == TOXIC and hidden_wl.find(ex.text) and not seen_wl.find(ex.text)]
    seen_toxic = [ex for ex in hold if ex.label == TOXIC and seen_wl.find(ex.text)]
    clean = [ex for ex in hold if ex.label == CLEAN]

    def flagged(exs: list[Example]) -> float | None:
        if not exs:
            return None
        return round(float(np.mean(predict_proba(model, [e.text for e in exs], TOXIC, cfg.max_chars) >= 0.5)), 4)

    return {
        "hidden_terms": len(hidden),
        "train_sentences_removed": len({e.key for e in train} - {e.key for e in train_b}),
        "recall_unseen_term_toxic": flagged(unseen_toxic),
        "n_unseen_term_toxic": len(unseen_toxic),
        "recall_seen_term_toxic": flagged(seen_toxic),
        "n_seen_term_toxic": len(seen_toxic),
        "false_positive_rate_clean": flagged(clean),
        "n_clean": len(clean),
    }


def _by_origin(hold: list[Example], p: np.ndarray) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for origin in sorted({ex.origin for ex in hold}):
        idx = [i for i, ex in enumerate(hold) if ex.origin == origin]
        out[origin] = {"n": len(idx), "flagged_at_0.5": round(float(np.mean(p[idx] >= 0.5)), 4),
                       "mean_p_toxic": round(float(p[idx].mean()), 4)}
    return out


def _label_text(cfg: ToxicityClassifierConfig, info: dict, clean_sources: list[str]) -> str:
    return (
        "No human-labelled toxicity data offline; labels come from word lists. Label terms = terms present in "
        f"{'every' if cfg.label_terms_rule == 'intersection' else 'any'} list of {cfg.wordlists} "
        f"({info['rule_terms']} terms) minus {len(info['excluded'])} clinical/ambiguous terms "
        f"(label_term_exclude) = {info['label_terms']} terms, matched as whole lower-case word tokens. "
        f"__label__toxic = any sentence (from {cfg.offensive_corpus_glob} or from the clean sources "
        f"{clean_sources}, split at sentence ends) containing a label term. __label__clean = clean-source "
        "sentences with no label term (curated_clean_share of the class) plus nlp-corpus sentences with no label "
        "term (the rest; those that hit only the broader union of the lists are labelled clean too and counted as "
        "offensive_corpus_broad_only). nlp-corpus builds are random mixes of its sub-corpora (rap lyrics, Reddit, "
        "jokes, SMS, reviews, fiction, UN text) without per-sentence tags, so 'offensive' is selected by the word "
        f"list, not by file. Sentences with fewer than {cfg.min_words} word tokens are skipped; up to "
        f"{cfg.max_sentences_per_class} per class are kept by lowest seeded hash; holdout_fraction are held out"
        + ("; in training, the smaller class is repeated to the size of the larger (balance_classes), so "
           "P(toxic) assumes equal priors while held-out precision is measured at the real sampled ratio."
           if cfg.balance_classes else ".")
    )
