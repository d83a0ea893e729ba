"""Stage 2, `clean/<source>`: normalisation, HTML stripping, language ID and heuristic quality filters.

Public API: `CleanConfig`, `clean_table(table, cfg, stats)`, `clean_batches(batches, cfg, stats)`,
`active_rule_names(cfg)`, `RULE_NAMES`. No Dagster here; the assets call `clean_table` per shard in a worker.

Where things live, in the order a document meets them:

    config.py          CleanConfig: every threshold and switch, with its published default; PROFILES
    stage.py           clean_table: preparation by profile, then the rules in order, and every counter
    html.py            HTML to text (prose profile)
    markup/            Markdown and reStructuredText to prose and code blocks (docs profile)
    normalize.py       Unicode and whitespace normalisation (prose), line endings only (code)
    langid.py          fastText language ID
    stopwords.py       stop words per language, for Gopher's stop-word rule
    lines.py           what a "line" is for line rules: units, hard-wrapped paragraphs, verse, lists
    docview.py         DocView: the statistics of one document that the rules share, computed lazily
    rules/registry.py  every rule name and the order they run in
    rules/gopher.py    Gopher quality and repetition rules (stop words: `_stop_words`)
    rules/c4.py        C4's line filter and page rules, the `fragmented` guard
    rules/fineweb.py   FineWeb's line-statistics rules
    rules/code.py      code-file rules, generated-file headers
    cli.py             `plasma clean`: the library on local files
"""

from plasma_pipeline.clean.config import CleanConfig
from plasma_pipeline.clean.rules import RULE_NAMES
from plasma_pipeline.clean.stage import active_rule_names, clean_batches, clean_table

__all__ = ["RULE_NAMES", "CleanConfig", "active_rule_names", "clean_batches", "clean_table"]
