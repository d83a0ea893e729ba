"""Stage 2 entry points: `clean_table` (one shard) and `clean_batches` (a stream of record batches).

Per document, in this order (the first failing rule drops it, counted as `dropped/<rule>`):

1. Preparation, by profile.
   prose: HTML to text (`cfg.html`, or auto-detected from meta / the text), then Unicode + whitespace
   normalisation (`normalize.normalize_text`).
   docs: Markdown / reStructuredText to prose (`markup/`); code blocks are kept verbatim outside the prose
   (`cfg.docs_code_blocks: keep`) or removed (`drop`). The rules below judge the prose only; C4's line rules judge
   its paragraphs, while headings, list items, table rows and lead-ins ("For example:") are structure, kept
   whole, and C4's curly-bracket and javascript detectors (web-page heuristics) do not run.
   code: line endings and one trailing newline only (`normalize.normalize_code`); the file is otherwise unchanged.
2. `empty`: nothing left (whitespace only).
3. prose / docs: `lang` (top fastText language not in `cfg.languages`), `lang_score` (top probability below
   `cfg.min_lang_score`); one batched fastText call per table.
4. prose / docs: Gopher quality rules, Gopher repetition rules, the C4 line filter (rewrites the text, unit by
   unit: a hard-wrapped paragraph is one unit, see `lines.py`) and its page rules, `fragmented` (the C4 line
   rules cut more than `cfg.max_removed_char_frac` of the prose's characters), FineWeb rules — see
   `rules/registry.py` for the exact list and order (`RULE_NAMES`).
   code: code rules only (`rules/code.py`); no language ID (lang = "code", lang_score = null).

Counters (all in the caller's Counter):

- documents: `docs_in`, `kept`, `dropped/<rule>` (every active rule appears, 0 when it dropped nothing);
  `kept + sum(dropped/*) == docs_in` always holds.
- characters (of the input `text`): `chars_in`, `chars_kept` (of the kept output texts), `chars_dropped/<rule>`
  (input characters of the documents a rule dropped), and for kept documents `chars_removed/<step>`: characters
  cut by `html` (markup and boilerplate), `markup` (docs markup), `docs_code_blocks` (docs, `drop`),
  `c4_<reason>` (C4 line rules: too_long_word, no_terminal_punct, too_few_words, javascript, policy, citations)
  and `normalize` (the rest: Unicode and whitespace normalisation and the line breaks around removed lines; net,
  so it can be negative, e.g. a code file given its final newline). Non-zero ones only. Always
  `chars_in == chars_kept + sum(chars_dropped/*) + sum(chars_removed/*)`.
- what changed: `modified/html_stripped`, `modified/docs_converted`, `modified/normalized`,
  `modified/c4_lines_removed`, `modified/c4_docs`, `c4_lines/<reason>` (units removed), `c4_wrapped_units`
  (units of two or more lines: hard-wrapped paragraphs judged whole).

Memory is bounded by one table (one shard): nothing is kept between calls except the cached fastText model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from plasma_pipeline.clean.config import CleanConfig
from plasma_pipeline.clean.docview import DocView, Rule
from plasma_pipeline.clean.html import html_to_text, looks_like_html
from plasma_pipeline.clean.langid import predict_languages
from plasma_pipeline.clean.markup import STRUCTURE, docs_format, docs_to_blocks
from plasma_pipeline.clean.normalize import fix_mojibake, normalize_code, normalize_text
from plasma_pipeline.clean.rules.c4 import FRAGMENTED, PROTECT, c4_filter, fragmented
from plasma_pipeline.clean.rules.registry import (
    active_rule_names,
    code_rules,
    prose_rules_after_c4,
    prose_rules_before_c4,
    runs_c4,
)
from plasma_pipeline.schema import CLEAN_SCHEMA, DOC_SCHEMA

__all__ = ["CODE_LANG", "active_rule_names", "clean_batches", "clean_table"]

CODE_LANG = "code"


@dataclass(slots=True)
class _Prepared:
    """One document ready for the rules. Docs: `marked` is the text C4 rewrites, where structure (headings, list
    items, table rows) is a paragraph starting with `PROTECT` and each kept code block a paragraph `PROTECT`
    alone; `code_blocks` are those blocks, in order."""

    text: str  # what the rules judge: the prose (docs: the prose and structure, no code), or the code file
    marked: str | None = None
    code_blocks: list[str] = field(default_factory=list)
    removed: dict[str, int] = field(default_factory=dict)  # characters cut by preparation steps


def _prepare(raw: str, meta: str | None, cfg: CleanConfig, stats: Counter[str]) -> _Prepared:
    profile = cfg.profile
    t = raw
    removed: dict[str, int] = {}
    if cfg.html is True or (cfg.html is None and profile == "prose" and looks_like_html(t, meta)):
        t = html_to_text(t)
        removed["html"] = len(raw) - len(t)
        stats["modified/html_stripped"] += 1
    if profile == "code":
        t = normalize_code(t)
        if t != raw:
            stats["modified/normalized"] += 1
        return _Prepared(t, removed=removed)
    if profile == "docs":
        return _prepare_docs(raw, t, meta, cfg, stats, removed)
    t = normalize_text(t, mojibake=cfg.fix_mojibake)
    if t != raw:
        stats["modified/normalized"] += 1
    return _Prepared(t, removed=removed)


def _prepare_docs(
    raw: str, t: str, meta: str | None, cfg: CleanConfig, stats: Counter[str], removed: dict[str, int]
) -> _Prepared:
    if cfg.fix_mojibake:
        t = fix_mojibake(t)
    blocks = docs_to_blocks(t, docs_format(t, meta, cfg.docs_format))  # drops private-use characters (PROTECT)
    stats["modified/docs_converted"] += 1
    keep_code = cfg.docs_code_blocks == "keep"
    prose: list[str] = []
    marked: list[str] = []
    codes: list[str] = []
    converted = dropped_code = 0
    for kind, text in blocks:
        converted += len(text) + 2
        if kind == "code":
            if keep_code:
                codes.append(text)
                marked.append(PROTECT)
            else:
                dropped_code += len(text) + 2
            continue
        para = normalize_text(text, mojibake=False)
        if para:
            prose.append(para)
            marked.append(PROTECT + para if kind in STRUCTURE else para)
    removed["markup"] = len(t) - max(converted - 2, 0)
    if dropped_code:
        removed["docs_code_blocks"] = dropped_code
    text = "\n\n".join(prose)
    if text != raw:
        stats["modified/normalized"] += 1
    return _Prepared(text, "\n\n".join(marked), codes, removed)


def _unmarked(text: str, codes: list[str] | None = None) -> str:
    """A docs text without its marks: code blocks put back (`codes`) or left out (None), structure unmarked."""
    it = iter(codes or ())
    out = []
    for para in text.split("\n\n"):
        if para == PROTECT:
            if codes is not None:
                out.append(next(it))
        elif para.startswith(PROTECT):
            out.append(para[len(PROTECT) :])
        else:
            out.append(para)
    return "\n\n".join(out)


# Steps of `_prepare` that change the form of a document on purpose (markup to prose), not its content.
CONVERSION_STEPS = ("html", "markup", "docs_code_blocks")


def clean_table(table: pa.Table, cfg: CleanConfig, stats: Counter[str]) -> pa.Table:
    """Clean one table of DOC_SCHEMA rows; return the kept rows as CLEAN_SCHEMA (text rewritten, lang added)."""
    code = cfg.profile == "code"
    names = active_rule_names(cfg)
    for name in names:
        stats[f"dropped/{name}"] += 0
    stats["kept"] += 0
    n = table.num_rows
    stats["docs_in"] += n
    if n == 0:
        return CLEAN_SCHEMA.empty_table()
    texts_in = [t or "" for t in table.column("text").to_pylist()]
    metas = table.column("meta").to_pylist() if "meta" in table.column_names else [None] * n
    stats["chars_in"] += sum(map(len, texts_in))

    def drop(i: int, reason: str) -> None:
        stats[f"dropped/{reason}"] += 1
        if texts_in[i]:
            stats[f"chars_dropped/{reason}"] += len(texts_in[i])

    prepared = [_prepare(t, m, cfg, stats) for t, m in zip(texts_in, metas)]
    drop_empty = "empty" in names
    alive = []
    for i, p in enumerate(prepared):
        if drop_empty and (not p.text or p.text.isspace()):
            drop(i, "empty")
        else:
            alive.append(i)

    langs: dict[int, tuple[str, float | None]] = {}
    if code:
        langs = {i: (CODE_LANG, None) for i in alive}
    else:
        pred_langs, pred_scores = predict_languages([prepared[i].text for i in alive], max_chars=cfg.lid_chars)
        langs = {i: (lang, score) for i, lang, score in zip(alive, pred_langs, pred_scores)}

    check_lang = "lang" in names and bool(cfg.languages)
    check_score = "lang_score" in names
    allowed = set(cfg.languages)
    if code:
        before, after = code_rules(cfg), []
    else:
        before, after = prose_rules_before_c4(cfg), prose_rules_after_c4(cfg)
    run_c4 = runs_c4(cfg)
    check_fragments = run_c4 and FRAGMENTED in names

    kept_idx: list[int] = []
    kept_text: list[str] = []
    for i in alive:
        lang, score = langs[i]
        if not code:
            if check_lang and lang not in allowed:
                drop(i, "lang")
                continue
            if check_score and (score or 0.0) < cfg.min_lang_score:
                drop(i, "lang_score")
                continue
        p = prepared[i]
        out = p.marked if p.marked is not None else p.text
        cut: dict[str, int] = {}
        logical = None
        reason = _first_failure(DocView(p.text, lang), before, cfg)
        prose = p.text
        if reason is None and run_c4:
            res = c4_filter(out, cfg, stats, protect=p.marked is not None)
            reason = res.reason
            if reason is None:
                out, cut, logical = res.text, res.removed, res.logical
                prose = _unmarked(out) if p.marked is not None else out
                # The base is the input less what a declared conversion (HTML, markup) took out: characters lost
                # to whitespace normalisation count as removed, so "kept ≥ half its input" holds on the input.
                base = len(texts_in[i]) - sum(p.removed.get(k, 0) for k in CONVERSION_STEPS)
                if check_fragments and fragmented(len(prose), max(base, len(p.text)), cfg):
                    reason = FRAGMENTED
        if reason is None and after:
            reason = _first_failure(DocView(prose, lang, logical), after, cfg)
        if reason is not None:
            drop(i, reason)
            continue
        if p.marked is not None:
            out = _unmarked(out, p.code_blocks)
        kept_idx.append(i)
        kept_text.append(out)
        accounted = 0
        for step, chars in p.removed.items():
            if chars:
                stats[f"chars_removed/{step}"] += chars
                accounted += chars
        for reason_, chars in cut.items():
            if chars:
                stats[f"chars_removed/c4_{reason_}"] += chars
                accounted += chars
        rest = len(texts_in[i]) - len(out) - accounted
        if rest:
            stats["chars_removed/normalize"] += rest

    stats["kept"] += len(kept_idx)
    stats["chars_kept"] += sum(map(len, kept_text))
    base = table.select([f.name for f in DOC_SCHEMA]).take(pa.array(kept_idx, type=pa.int64()))
    base = base.set_column(base.column_names.index("text"), DOC_SCHEMA.field("text"), pa.array(kept_text, pa.string()))
    lang_col = pa.array([langs[i][0] for i in kept_idx], pa.string())
    score_col = pa.array([langs[i][1] for i in kept_idx], pa.float32())
    out_table = base.append_column(CLEAN_SCHEMA.field("lang"), lang_col).append_column(
        CLEAN_SCHEMA.field("lang_score"), score_col
    )
    return out_table.cast(CLEAN_SCHEMA)


def _first_failure(doc: DocView, rules: list[tuple[str, Rule]], cfg: CleanConfig) -> str | None:
    for name, rule in rules:
        if rule(doc, cfg):
            return name
    return None


def clean_batches(
    batches: Iterable[pa.RecordBatch | pa.Table], cfg: CleanConfig, stats: Counter[str]
) -> Iterator[pa.Table]:
    """Streaming form: clean each batch as it comes, so memory stays at one batch whatever the shard size."""
    for batch in batches:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        yield clean_table(table, cfg, stats)
