"""Stage 2 entry points: `clean_table` (one shard) and `clean_batches` (a stream of record batches).

Per document, in this order (the first failing rule drops it, counted as `dropped/<rule>`):

1. HTML to text (`cfg.html`, or auto-detected from meta / the text), then Unicode + whitespace normalisation.
2. `empty`: nothing left.
3. prose only: `lang` (top fastText language not in `cfg.languages`), `lang_score` (top probability below
   `cfg.min_lang_score`); one batched fastText call per table.
4. prose: Gopher quality rules, Gopher repetition rules, C4 line filter (rewrites the text) and its page rules,
   FineWeb rules — see `rules.py` for the exact list and order (`rules.RULE_NAMES`).
   code: code rules only (`rules.CODE_RULES`); no language ID (lang = "code", lang_score = null).

Counters (all in the caller's Counter): `docs_in`, `kept`, `dropped/<rule>` (every active rule appears, 0 when it
dropped nothing), `modified/html_stripped`, `modified/normalized`, `modified/c4_lines_removed`, `modified/c4_docs`,
`c4_lines/<reason>`, `chars_in`, `chars_out`. `kept + sum(dropped/*) == docs_in` always holds.

Memory is bounded by one table (one shard): nothing is kept between calls except the cached fastText model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

import pyarrow as pa

from plasma_pipeline.clean import rules as R
from plasma_pipeline.clean.config import CleanConfig
from plasma_pipeline.clean.html import html_to_text, looks_like_html
from plasma_pipeline.clean.langid import predict_languages
from plasma_pipeline.clean.normalize import normalize_text
from plasma_pipeline.schema import CLEAN_SCHEMA, DOC_SCHEMA

CODE_LANG = "code"


def active_rule_names(cfg: CleanConfig) -> list[str]:
    """The rules `clean_table` applies for this config, in order."""
    if cfg.profile == "code":
        names = ["empty"] + [n for n, _ in R.code_rules(cfg)]
    else:
        names = ["empty", "lang", "lang_score"] + [n for n, _ in R.prose_rules_before_c4(cfg)]
        if R.C4_LINE_FILTER not in cfg.rules_disabled:
            names += list(R.C4_PAGE_RULES)
        names += [n for n, _ in R.prose_rules_after_c4(cfg)]
    return [n for n in names if n not in cfg.rules_disabled]


def _prepare_text(text: str | None, meta: str | None, cfg: CleanConfig, code: bool, stats: Counter[str]) -> str:
    raw = text or ""
    t = raw
    if cfg.html is True or (cfg.html is None and not code and looks_like_html(t, meta)):
        t = html_to_text(t)
        stats["modified/html_stripped"] += 1
    t = normalize_text(t, code=code, mojibake=cfg.fix_mojibake)
    if t != raw:
        stats["modified/normalized"] += 1
    return t


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
    texts_in = table.column("text").to_pylist()
    metas = table.column("meta").to_pylist() if "meta" in table.column_names else [None] * n
    stats["chars_in"] += sum(len(t) for t in texts_in if t)

    texts = [_prepare_text(t, m, cfg, code, stats) for t, m in zip(texts_in, metas)]
    drop_empty = "empty" in names
    alive = [i for i, t in enumerate(texts) if t or not drop_empty]
    stats["dropped/empty"] += n - len(alive) if drop_empty else 0

    langs: dict[int, tuple[str, float | None]] = {}
    if code:
        langs = {i: (CODE_LANG, None) for i in alive}
    else:
        pred_langs, pred_scores = predict_languages([texts[i] for i in alive], max_chars=cfg.lid_chars)
        langs = {i: (lang, score) for i, lang, score in zip(alive, pred_langs, pred_scores)}

    check_lang = "lang" in names and bool(cfg.languages)
    check_score = "lang_score" in names
    allowed = set(cfg.languages)
    if code:
        before, after = R.code_rules(cfg), []
    else:
        before, after = R.prose_rules_before_c4(cfg), R.prose_rules_after_c4(cfg)
    run_c4 = not code and R.C4_LINE_FILTER not in cfg.rules_disabled

    kept_idx: list[int] = []
    kept_text: list[str] = []
    for i in alive:
        lang, score = langs[i]
        if not code:
            if check_lang and lang not in allowed:
                stats["dropped/lang"] += 1
                continue
            if check_score and (score or 0.0) < cfg.min_lang_score:
                stats["dropped/lang_score"] += 1
                continue
        text = texts[i]
        reason = _first_failure(R.DocView(text), before, cfg)
        if reason is None and run_c4:
            text, reason = R.c4_filter(text, cfg, stats)
        if reason is None and after:
            reason = _first_failure(R.DocView(text), after, cfg)
        if reason is not None:
            stats[f"dropped/{reason}"] += 1
            continue
        kept_idx.append(i)
        kept_text.append(text)

    stats["kept"] += len(kept_idx)
    stats["chars_out"] += sum(map(len, kept_text))
    base = table.select([f.name for f in DOC_SCHEMA]).take(pa.array(kept_idx, type=pa.int64()))
    base = base.set_column(base.column_names.index("text"), DOC_SCHEMA.field("text"), pa.array(kept_text, pa.string()))
    lang_col = pa.array([langs[i][0] for i in kept_idx], pa.string())
    score_col = pa.array([langs[i][1] for i in kept_idx], pa.float32())
    out = base.append_column(CLEAN_SCHEMA.field("lang"), lang_col).append_column(
        CLEAN_SCHEMA.field("lang_score"), score_col
    )
    return out.cast(CLEAN_SCHEMA)


def _first_failure(doc: R.DocView, rules: list[tuple[str, R.Rule]], cfg: CleanConfig) -> str | None:
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
