"""Stage 5 dedup on real text: exact and near duplicates, confirmation, clusters, keepers, files and CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plasma_pipeline.dedup import DedupConfig, dedup_files, dedup_tables
from plasma_pipeline.dedup.clusters import components
from plasma_pipeline.recipe import REPO_ROOT
from plasma_pipeline_tests.dedup.corpora import (
    edit_every,
    hamlet_words,
    shingle_jaccard,
    wiki_docs,
)


def table(texts, ids=None, source="wiki"):
    ids = ids or [f"doc{i:04d}" for i in range(len(texts))]
    sources = source if isinstance(source, list) else [source] * len(texts)
    return pa.table({"id": ids, "text": texts, "source": sources})


def run(tables, **kw):
    stats = Counter()
    res = dedup_tables(tables, DedupConfig(**kw), stats)
    return res, stats


def test_exact_duplicates_removed_after_normalisation():
    docs = wiki_docs()[:40]
    copies = [docs[3].upper(), "  " + docs[7].replace(" ", "\n  "), docs[11]]
    res, stats = run([table(docs), table(copies, ids=["c0", "c1", "c2"])])
    assert stats["dropped/exact_duplicate"] == 3
    assert stats["dropped/near_duplicate"] == 0
    assert stats["kept"] == 40
    assert res.metadata["exact_duplicates"] == 3
    clusters = {frozenset(c) for c in res.clusters()}
    assert clusters == {frozenset({"doc0003", "c0"}), frozenset({"doc0007", "c1"}), frozenset({"doc0011", "c2"})}


def test_near_duplicate_high_jaccard_removed_low_kept():
    words = hamlet_words()[1000:1400]
    base = " ".join(words)
    near = " ".join(edit_every(words, 100))  # ~5% of shingles touched
    far = " ".join(edit_every(words, 9))  # ~55% of shingles touched
    j_near, j_far = shingle_jaccard(base, near), shingle_jaccard(base, far)
    assert 0.87 <= j_near <= 0.93 and 0.25 <= j_far <= 0.35
    others = wiki_docs()[:20]
    res, stats = run([table([base, near, far] + others, ids=["base", "near", "far"] + [f"w{i}" for i in range(20)])])
    assert res.clusters() == [["base", "near"]] or res.clusters() == [["near", "base"]]
    assert stats["dropped/near_duplicate"] == 1
    assert "far" in res.kept_ids()


def test_confirmation_rejects_false_candidates():
    words = hamlet_words()[2000:2300]
    a = " ".join(words)
    b = " ".join(edit_every(words, 7))  # J ~ 0.17: shares some shingles, far from a duplicate
    assert 0.1 < shingle_jaccard(a, b) < 0.3
    # 112 bands of 1 row: sharing a single minimum makes a candidate pair
    kw = {"bands": 112, "rows": 1, "num_perm": 112}
    res, stats = run([table([a, b], ids=["a", "b"])], **kw)
    assert stats["candidates/pairs"] == 1
    assert stats["candidates/rejected_by_confirm"] == 1
    assert res.kept_ids() == {"a", "b"}
    res, stats = run([table([a, b], ids=["a", "b"])], confirm_threshold=0.0, **kw)  # trusting LSH merges them
    assert stats["dropped/near_duplicate"] == 1


def test_union_find_is_transitive_across_shards():
    w = hamlet_words()[3000:3300]
    a, b, c = " ".join(w[0:220]), " ".join(w[20:240]), " ".join(w[40:260])
    assert shingle_jaccard(a, b) >= 0.75 and shingle_jaccard(b, c) >= 0.75 and shingle_jaccard(a, c) < 0.7
    res, stats = run([table([a], ids=["A"]), table([b], ids=["B"]), table([c], ids=["C"])])
    assert len(res.clusters()) == 1 and sorted(res.clusters()[0]) == ["A", "B", "C"]
    assert stats["kept"] == 1 and stats["dropped/near_duplicate"] == 2
    nodes, labels = components(np.array([0, 3, 1, 7]), np.array([1, 4, 4, 9]))  # 2 has no edge: not a node
    assert nodes.tolist() == [0, 1, 3, 4, 7, 9]
    assert labels.tolist() == [0, 0, 0, 0, 1, 1]


def test_keeper_is_deterministic_and_follows_the_rule():
    w = hamlet_words()[4000:4300]
    short, mid, long_ = " ".join(w[:250]), " ".join(w[:260]), " ".join(w[:270])
    t1 = table([mid, long_], ids=["m", "l"], source="lit")
    t2 = table([short], ids=["s"], source="wiki")
    for order in ([t1, t2], [t2, t1]):
        res, _ = run(order)
        assert res.kept_ids() == {"l"}  # longest
        assert run(order, keep="shortest")[0].kept_ids() == {"s"}
        assert run(order, keep="smallest_id")[0].kept_ids() == {"l"}
        assert run(order, source_priority=["wiki"])[0].kept_ids() == {"s"}
    assert run([t2, t1], keep="first")[0].kept_ids() == {"s"}


def test_per_source_dup_rate_and_cluster_histogram():
    docs = wiki_docs()[100:130]
    lit = [" ".join(hamlet_words()[5000 + 300 * i : 5300 + 300 * i]) for i in range(10)]
    t_wiki = table(docs + docs[:6], ids=[f"w{i}" for i in range(36)], source="wiki")
    t_lit = table(lit + [lit[0] + " Exeunt"], ids=[f"l{i}" for i in range(11)], source="lit")
    res, stats = run([t_wiki, t_lit])
    per = res.metadata["dup_rate_per_source"]
    assert per["wiki"] == {"docs": 36, "dropped": 6, "dup_rate": round(6 / 36, 6)}
    assert per["lit"]["dropped"] == 1
    assert res.metadata["cluster_size_histogram"] == {"1": 33, "2": 7}
    assert res.metadata["index_bytes"] == 47 * 14 * 8
    assert stats["kept"] == 40


def test_backends_agree_and_the_spill_dir_is_removed(tmp_path):
    base = wiki_docs()[200:400]
    w = hamlet_words()[6000:6300]
    variants = [" ".join(edit_every(w, k)) for k in (60, 80, 100)]
    tabs = [table(base), table([" ".join(w)] + variants, ids=["h", "v1", "v2", "v3"], source="lit")]
    ref, ref_stats = run(tabs, backend="numpy")
    spill = tmp_path / "spill"
    other, other_stats = run(tabs, backend="rensa", spill_dir=str(spill))
    assert other.metadata["index_on_disk"] and other.metadata["spill_bytes"]["bands"] == 204 * 14 * 8
    assert spill.is_dir() and not any(spill.iterdir())  # its temporary directory is gone after the run
    assert ref.kept_ids() == other.kept_ids()
    assert ref_stats["dropped/near_duplicate"] == other_stats["dropped/near_duplicate"] == 3


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="num_perm"):
        DedupConfig(bands=10, rows=8)
    with pytest.raises(ValueError, match="keep"):
        DedupConfig(keep="random")
    with pytest.raises(ValueError, match="confirm_threshold"):
        DedupConfig(confirm_threshold=1.5)
    with pytest.raises(ValueError, match="backend"):
        DedupConfig(backend="gpu")
    with pytest.raises(ValueError, match="memory_gb"):
        DedupConfig(memory_gb=0)


def _write_inputs(tmp_path):
    docs = wiki_docs()[:30]
    pq.write_table(table(docs[:20], ids=[f"p{i}" for i in range(20)]), tmp_path / "part.parquet")
    with open(tmp_path / "more.jsonl", "w") as f:  # no id/source columns: made from the file name
        f.writelines(json.dumps({"text": t, "extra": 1}) + "\n" for t in docs[15:30] + [docs[0].lower()])
    return docs


def test_dedup_files_parquet_and_jsonl(tmp_path):
    _write_inputs(tmp_path)
    out = tmp_path / "out"
    res = dedup_files([str(tmp_path / "part.parquet"), str(tmp_path / "*.jsonl")], out)
    kept_p = pq.read_table(out / "part.parquet")
    kept_j = pq.read_table(out / "more.parquet")
    # docs 15-19 are in both files, docs[0] lower-cased in the jsonl: 6 exact duplicates
    assert kept_p.num_rows + kept_j.num_rows == 30
    assert res.metadata["exact_duplicates"] == 6
    assert kept_j.column("source").to_pylist()[0] == "more"
    assert json.loads(kept_j.column("meta").to_pylist()[0]) == {"extra": 1}  # other fields: JSON in `meta`
    report = json.loads((out / "dedup_stats.json").read_text())
    assert report["counters"]["dropped/exact_duplicate"] == 6


def test_cli_subprocess_with_worker_pool(tmp_path):
    _write_inputs(tmp_path)
    out = tmp_path / "cli_out"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "plasma_pipeline.dedup",
            str(tmp_path / "part.parquet"),
            str(tmp_path / "more.jsonl"),
            "--out",
            str(out),
            "--bands",
            "7",
            "--rows",
            "16",
            "--processes",
            "2",
            "--backend",
            "rensa",
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["docs"] == 36 and summary["kept"] == 30
    assert summary["counters"]["dropped/exact_duplicate"] == 6
    assert json.loads((out / "dedup_stats.json").read_text())["metadata"]["config"]["bands"] == 7
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "plasma_pipeline.dedup",
            str(tmp_path / "part.parquet"),
            "--out",
            str(out),
            "--bands",
            "5",
            "--num-perm",
            "112",
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert bad.returncode == 2 and "num_perm" in bad.stderr


def test_wordless_docs_are_only_merged_when_their_text_matches():
    res, stats = run([table(["!!!", "???", "", " !!! "], ids=["a", "b", "c", "d"])])
    assert res.kept_ids() == {"b", "c", "d"}  # "!!!" and " !!! " are exact duplicates; the longer is kept
    assert stats["skipped/no_words"] == 4 and stats["dropped/exact_duplicate"] == 1
