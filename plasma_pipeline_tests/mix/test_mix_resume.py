"""Stage 7 resumes within the stage: a run killed with kill -9 at ~80% of its tokenising reuses the slices it had
finished (keyed by input shard hash and code version) and publishes the same bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from plasma_pipeline.shards import ShardStore, StoreConfig
from plasma_pipeline_tests.mix.conftest import mix_domains

N_SHARDS = 10

RUN = textwrap.dedent(
    """
    import sys, time
    from collections import Counter
    from pathlib import Path
    from plasma_pipeline.mix import MixConfig, ShardFiles, TokenCache, build_token_shards
    from plasma_pipeline.mix import build
    from plasma_pipeline.shard_work import clear_cache
    from plasma_pipeline.shards import ShardStore, StoreConfig
    root, tok, slow = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if slow:  # the real tokenising, slowed down so the test can kill the run in the middle
        part = build._tokenize_part
        build._tokenize_part = lambda *a: (time.sleep(slow), part(*a))[1]
    store = ShardStore(StoreConfig(max_rows_per_shard=300), root=root)
    deduped = store.current("deduped")
    cache_dir = store.asset_dir("pretrain_shards") / "work" / "shard-cache"
    cfg = MixConfig(weights={"wiki": 0.6, "dialog": 0.4}, total_tokens=60_000, seq_len=64, val_fraction=0.05,
                    rows_per_shard=200)
    cache = TokenCache(str(cache_dir), "code-v1",
                       {str(deduped.path / e["path"]): e["sha256"] for e in deduped.manifest["shards"]})
    with store.writer("pretrain_shards") as w, store.scratch("pretrain_shards") as work:
        train = ShardFiles(str(work / "train"), lambda p, sha: w.add_file(Path(p), "train", sha), 300, 100)
        domains = {d: (lambda d=d: deduped.shards(split=d)) for d in ("wiki", "dialog")}
        build_token_shards(domains, tok, cfg, train, w.writer_for("val"), w.stats, work_dir=work, processes=1,
                           cache=cache, log=print)
        v = w.publish()
    clear_cache(cache_dir)
    print("VERSION", v.id, flush=True)
    """
)


def _deduped_store(root) -> ShardStore:
    """wiki and dialog documents as a deduped version of N_SHARDS shards, one split per domain."""
    tables = mix_domains()
    store = ShardStore(StoreConfig(max_rows_per_shard=60), root=root)
    with store.writer("deduped") as w:
        w.write(tables["wiki"].slice(0, 420).select(["id", "text"]), split="wiki")  # 7 shards
        w.write(tables["dialog"].slice(0, 180).select(["id", "text"]), split="dialog")  # 3 shards
        v = w.publish()
    assert len(v.shards()) == N_SHARDS
    return store


def _run(root, tok, slow="0"):
    return [sys.executable, "-c", RUN, str(root), str(tok), slow]


def test_pretrain_shards_killed_at_80_percent_of_tokenising_reuses_its_slices_and_publishes_the_same_bytes(
        tmp_path, tok_path):
    whole = subprocess.run(_run(_deduped_store(tmp_path / "whole").root, tok_path), capture_output=True, text=True,
                           timeout=300)
    assert whole.returncode == 0, whole.stderr
    expected = whole.stdout.split("VERSION ")[1].strip()

    store = _deduped_store(tmp_path / "killed")
    cache = store.asset_dir("pretrain_shards") / "work" / "shard-cache"
    proc = subprocess.Popen(_run(store.root, tok_path, "0.3"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cache.glob("*.npz"))) < 8:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(cache.glob("*.npz")))
    assert 8 <= done < N_SHARDS, done
    assert not (store.root / "pretrain_shards" / "CURRENT").exists()

    again = subprocess.run(_run(store.root, tok_path), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"tokenize: reused {done} of {N_SHARDS} shards" in again.stdout
    assert again.stdout.split("VERSION ")[1].strip() == expected
    assert not cache.exists()
