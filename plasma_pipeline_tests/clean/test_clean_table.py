"""`clean_table` end to end: schema, language ID, counters, rule order, switches, config validation, workers."""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import pickle
from collections import Counter

import pyarrow as pa
import pytest

from plasma_pipeline.clean import (
    RULE_NAMES,
    CleanConfig,
    active_rule_names,
    clean_batches,
    clean_table,
)
from plasma_pipeline.schema import CLEAN_SCHEMA, DOC_SCHEMA


def docs_table(texts: list[str], metas: list[str | None] | None = None, source: str = "wiki") -> pa.Table:
    metas = metas or [None] * len(texts)
    return pa.Table.from_pylist(
        [
            {"id": f"{source}-{i}", "text": t, "source": source, "url": None, "meta": m}
            for i, (t, m) in enumerate(zip(texts, metas))
        ],
        schema=DOC_SCHEMA,
    )


def dropped(stats: Counter) -> int:
    return sum(v for k, v in stats.items() if k.startswith("dropped/"))


@pytest.fixture(scope="module")
def mixed(long_en_extracts, wiki_fr, wiki_es, hamlet, kubrick) -> list[str]:
    fr = [v["extract"] for v in wiki_fr.values() if len(v["extract"].split()) > 100][:20]
    es = [v["extract"] for v in wiki_es.values() if len(v["extract"].split()) > 100][:10]
    return (
        long_en_extracts[:60]
        + fr
        + es
        + ["", "   \n\t "]
        + [" ".join(kubrick.split()[:25])]
        + ["\n\n".join([long_en_extracts[0]] * 4)]
        + [hamlet[40_000:48_000]]
    )


def test_schema_counters_and_language(mixed):
    stats: Counter = Counter()
    out = clean_table(docs_table(mixed), CleanConfig(), stats)
    assert out.schema.equals(CLEAN_SCHEMA)
    assert stats["docs_in"] == len(mixed)
    assert stats["kept"] == out.num_rows
    assert stats["kept"] + dropped(stats) == len(mixed)
    assert stats["dropped/lang"] == 30  # every French and Spanish summary
    assert stats["dropped/empty"] == 2
    assert stats["dropped/gopher_min_words"] == 1
    assert stats["dropped/gopher_dup_para_frac"] == 1
    # the Hamlet scene: strict C4 would cut its speaker names (too few words) and the verse without end stops,
    # most of the scene, so it is dropped as a fragment instead of kept shredded
    assert stats["c4_lines/no_terminal_punct"] > 50 and stats["c4_lines/too_few_words"] > 30
    assert stats["dropped/fragmented"] == 1
    assert out.num_rows >= 55
    assert set(out.column("lang").to_pylist()) == {"en"}
    assert min(out.column("lang_score").to_pylist()) >= 0.65
    for name in active_rule_names(CleanConfig()):
        assert f"dropped/{name}" in stats  # every active rule reports, even with 0
    assert stats["chars_kept"] <= stats["chars_in"]


def test_french_source_keeps_french(wiki_fr):
    fr = [v["extract"] for v in wiki_fr.values() if len(v["extract"].split()) > 120 and v["extract"].count(". ") >= 6][:20]
    fr_stop = ["le", "la", "les", "de", "des", "et", "un", "une", "est", "en"]
    cfg = CleanConfig(languages=["fr"], stop_words=fr_stop)
    stats: Counter = Counter()
    out = clean_table(docs_table(fr), cfg, stats)
    assert stats["dropped/lang"] == 0
    assert out.num_rows >= 15
    assert set(out.column("lang").to_pylist()) == {"fr"}


def test_lang_score_rule(long_en_extracts, wiki_fr):
    fr = next(v["extract"] for v in wiki_fr.values() if len(v["extract"].split()) > 100)
    en = long_en_extracts[0]
    half = " ".join(en.split()[:60]) + " " + " ".join(fr.split()[:60])  # half English, half French
    stats: Counter = Counter()
    # any language, but the model must be sure of it: a 50/50 mix scores well under 0.8
    clean_table(docs_table([half]), CleanConfig(languages=[], min_lang_score=0.8), stats)
    assert stats["dropped/lang_score"] == 1 and stats["dropped/lang"] == 0
    stats = Counter()
    clean_table(docs_table([en]), CleanConfig(languages=[], min_lang_score=0.8), stats)
    assert stats["dropped/lang_score"] == 0


def test_first_failing_rule_wins(long_en_extracts):
    # Truncated AND repeated: fails gopher_min_words and the repetition rules; only the first is counted.
    short = " ".join(long_en_extracts[0].split()[:12])
    text = "\n\n".join([short] * 3)
    stats: Counter = Counter()
    clean_table(docs_table([text]), CleanConfig(), stats)
    assert stats["dropped/gopher_min_words"] == 1 and dropped(stats) == 1


def test_rules_disabled_keeps_the_doc(long_en_extracts):
    text = "\n\n".join([long_en_extracts[0]] * 4)
    stats: Counter = Counter()
    assert clean_table(docs_table([text]), CleanConfig(), stats).num_rows == 0
    assert stats["dropped/gopher_dup_para_frac"] == 1
    rep = [
        "gopher_dup_para_frac",
        "gopher_dup_para_char_frac",
        "gopher_dup_line_frac",
        "gopher_dup_line_char_frac",
        "fineweb_char_dup_ratio",
    ] + [f"gopher_top_{n}gram" for n in (2, 3, 4)] + [f"gopher_dup_{n}gram" for n in range(5, 11)]
    stats = Counter()
    out = clean_table(docs_table([text]), CleanConfig(rules_disabled=rep), stats)
    assert out.num_rows == 1 and stats["kept"] == 1
    assert "dropped/gopher_dup_para_frac" not in stats


def test_c4_line_filter_rewrites_text_and_can_be_disabled(long_en_extracts, recipes):
    rec = recipes[0]
    text = rec["title"] + "\n\n" + long_en_extracts[0]  # the title has no terminal punctuation
    stats: Counter = Counter()
    out = clean_table(docs_table([text]), CleanConfig(), stats)
    assert out.column("text")[0].as_py() == long_en_extracts[0]
    assert stats["modified/c4_lines_removed"] == 1
    stats = Counter()
    out = clean_table(docs_table([text]), CleanConfig(rules_disabled=["c4_line_filter"]), stats)
    assert out.column("text")[0].as_py().startswith(rec["title"])
    assert stats["modified/c4_lines_removed"] == 0


def test_html_documents(kubrick, long_en_extracts):
    body = long_en_extracts[0]
    html = (
        "<html><head><script>var x = 1;</script></head><body><nav>Home | About</nav>"
        + "".join(f"<p>{s}.</p>" for s in body.rstrip(".").split(". "))
        + "<footer>Terms of use</footer></body></html>"
    )
    meta = json.dumps({"format": "html"})
    stats: Counter = Counter()
    out = clean_table(docs_table([html, body], [meta, None]), CleanConfig(), stats)
    assert stats["modified/html_stripped"] == 1
    texts = out.column("text").to_pylist()
    assert len(texts) == 2
    assert texts[0].split("\n\n")[0] == body.split(". ")[0] + "."  # one paragraph per <p>
    assert texts[0].split() == body.split()
    assert "Home" not in texts[0] and "Terms" not in texts[0] and "var x" not in texts[0]


def test_empty_table():
    stats: Counter = Counter()
    out = clean_table(DOC_SCHEMA.empty_table(), CleanConfig(), stats)
    assert out.schema.equals(CLEAN_SCHEMA) and out.num_rows == 0 and stats["docs_in"] == 0


def test_clean_batches_streams(long_en_extracts):
    table = docs_table(long_en_extracts[:30])
    stats: Counter = Counter()
    parts = list(clean_batches(table.to_batches(max_chunksize=7), CleanConfig(), stats))
    assert len(parts) == 5
    whole = clean_table(table, CleanConfig(), Counter())
    assert pa.concat_tables(parts).equals(whole)
    assert stats["docs_in"] == 30


def _clean_in_worker(args):
    table, cfg = args
    stats: Counter = Counter()
    return clean_table(table, cfg, stats), stats


def test_runs_in_a_process_pool(long_en_extracts, wiki_fr):
    """The shard store maps clean_table over shards in worker processes: config and tables must pickle."""
    cfg = CleanConfig(min_words=20)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    fr = [v["extract"] for v in list(wiki_fr.values())[:10]]
    shards = [docs_table(long_en_extracts[:20]), docs_table(fr + long_en_extracts[20:30])]
    # spawn, as the shard store's map_shards does: the worker re-imports everything and loads fastText itself
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_clean_in_worker, [(s, cfg) for s in shards]))
    for shard, (out, stats) in zip(shards, results):
        local = clean_table(shard, cfg, Counter())
        assert out.equals(local)
        assert stats["kept"] + dropped(stats) == shard.num_rows
    assert results[1][1]["dropped/lang"] == 10


# --- config validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"profile": "poetry"}, "profile"),
        ({"min_lang_score": 1.5}, "min_lang_score"),
        ({"languages": "en"}, "languages"),
        ({"min_words": -1}, "min_words"),
        ({"min_words": 500, "max_words": 100}, "max_words"),
        ({"max_dup_line_frac": 2}, "max_dup_line_frac"),
        ({"max_top_ngram_char_frac": {"two": 0.2}}, "max_top_ngram_char_frac"),
        ({"max_dup_ngram_char_frac": {5: 1.5}}, "max_dup_ngram_char_frac"),
        ({"rules_disabled": ["gopher_typo"]}, "rules_disabled"),
        ({"html": "yes"}, "html"),
        ({"code_max_line_length": 0}, "code_max_line_length"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CleanConfig(**kwargs)


def test_config_defaults_and_yaml_keys():
    cfg = CleanConfig(max_top_ngram_char_frac={"2": 0.25}, rules_disabled=["gopher_dup_11gram", "lang"])
    assert cfg.max_top_ngram_char_frac == {2: 0.25}
    d = CleanConfig()
    assert (d.min_words, d.max_words, d.min_lang_score, d.c4_min_sentences) == (50, 100_000, 0.65, 5)
    assert d.max_dup_ngram_char_frac == {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    assert "lang" in RULE_NAMES and "code_autogenerated" in RULE_NAMES
    assert active_rule_names(CleanConfig(profile="code"))[0] == "empty"
    assert "lang" not in active_rule_names(CleanConfig(profile="code"))
