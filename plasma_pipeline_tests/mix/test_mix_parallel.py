"""Stage 7 in worker processes: the same shards, byte for byte, whatever the number of processes and inputs."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plasma_pipeline.mix import MixConfig, ShardFiles, build_token_shards
from plasma_pipeline.mix import build as mix_build
from plasma_pipeline.shards import file_sha256
from plasma_pipeline_tests.mix.conftest import iters, mix_domains


def shard_files(tables, tmp_path, rows=90) -> dict[str, list[str]]:
    """Each domain's documents as Parquet shards of `rows` rows, as the deduped store holds them."""
    out = {}
    for d, t in tables.items():
        (tmp_path / d).mkdir()
        out[d] = []
        for k, i in enumerate(range(0, t.num_rows, rows)):
            p = tmp_path / d / f"part-{k:05d}.parquet"
            pq.write_table(t.slice(i, rows), p)
            out[d].append(str(p))
    return out


def parquet_bytes(table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def run(tok_path, cfg, sources, processes):
    train, val, stats = [], [], Counter()
    meta = build_token_shards(sources, tok_path, cfg, train.append, val.append, stats, processes=processes)
    return meta, [parquet_bytes(t) for t in train], [parquet_bytes(t) for t in val], stats


@pytest.fixture(scope="module")
def cfg():
    # wiki and dialog down-sampled, shakespeare up-sampled, recipes capped at 2 epochs; 1000-row train shards
    return MixConfig(weights={"wiki": 0.1, "recipes": 0.45, "dialog": 0.1, "shakespeare": 0.35}, total_tokens=400_000,
                     seq_len=64, val_fraction=0.05, max_epochs=2.0, rows_per_shard=1000)


def test_processes_1_and_2_write_the_same_shards_byte_for_byte(tok_path, cfg, tmp_path, monkeypatch):
    tables = mix_domains()
    paths = shard_files(tables, tmp_path)
    one = run(tok_path, cfg, iters(tables, batch=90), processes=1)  # the same tables, in this process
    monkeypatch.setattr(mix_build, "_TASK_BYTES", 12_000)  # big shards are cut into several tasks
    monkeypatch.setattr(mix_build, "_POOL_PACK_TOKENS", 0)  # and packing goes to the workers too
    tasks = list(mix_build._tasks({d: lambda d=d: paths[d] for d in paths}, sorted(paths), (), str(tmp_path)))
    assert len(tasks) > sum(map(len, paths.values()))
    two = run(tok_path, cfg, {d: lambda d=d: paths[d] for d in paths}, processes=2)  # shard paths, 2 workers
    two_tables = run(tok_path, cfg, iters(tables, batch=90), processes=2)  # tables sent to the workers
    meta, train, val, stats = one
    assert len(train) > 2 and len(val) >= 1  # several train shards: packing ran in the pool too
    for other in (two, two_tables):
        assert other[1] == train and other[2] == val
        assert other[0] == meta and other[3] == stats
    epochs = meta["epochs_per_domain"]
    assert max(epochs.values()) > 1 > min(epochs.values())  # up- and down-sampled domains, exact budgets
    assert meta["capped_domains"] == ["recipes"]


def test_inputs_as_shard_paths_match_tables_and_empty_shards_are_fine(tok_path, cfg, tmp_path):
    tables = mix_domains()
    paths = shard_files(tables, tmp_path, rows=400)
    empty = tmp_path / "empty.parquet"
    pq.write_table(tables["wiki"].slice(0, 0), empty)
    paths["wiki"].insert(1, str(empty))
    a = run(tok_path, cfg, iters(tables, batch=400), processes=1)
    b = run(tok_path, cfg, {d: lambda d=d: paths[d] for d in paths}, processes=1)
    assert a[1] == b[1] and a[2] == b[2] and a[0] == b[0]


def test_pack_workers_write_the_train_shards_themselves_identically_for_1_and_2_processes(tok_path, cfg, tmp_path,
                                                                                           monkeypatch):
    tables = mix_domains()
    paths = shard_files(tables, tmp_path)
    sources = {d: lambda d=d: paths[d] for d in paths}
    expected = run(tok_path, cfg, sources, processes=1)[1]  # the tables a writer would get
    monkeypatch.setattr(mix_build, "_POOL_PACK_TOKENS", 0)  # packing in the pool too
    written = {}
    for processes in (1, 2):
        adopted: list[tuple[str, str]] = []
        files = ShardFiles(str(tmp_path / f"out{processes}"), lambda p, sha: adopted.append((p, sha)),
                           max_rows=600, row_group_rows=250)
        build_token_shards(sources, tok_path, cfg, files, [].append, Counter(), processes=processes)
        for p, sha in adopted:
            assert file_sha256(Path(p)) == sha  # hashed by the worker that wrote it
        written[processes] = [(Path(p).name, sha) for p, sha in adopted]
        tables_out = [pq.read_table(p) for p, _ in adopted]
        assert all(t.num_rows <= 600 for t in tables_out)  # 1000-row shards cut to the store's max rows
        assert pq.ParquetFile(adopted[0][0]).metadata.num_row_groups == 3
        assert pa.concat_tables(tables_out).equals(pa.concat_tables([pq.read_table(io.BytesIO(b)) for b in expected]))
    assert written[1] == written[2] and len(written[1]) > len(expected)
