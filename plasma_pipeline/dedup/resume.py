"""Signatures that outlive a killed run: the per-shard pass (`signatures.spill_signatures`) writes each shard's
files into a cache entry keyed by the stage's code version and the input shard's sha256, and a rerun reuses every
complete entry instead of reading and signing the shard again.

Layout: `<cache>/<key>/sNNNNN.*` (the spill files of one shard, `spill.Spill` names, NNNNN the shard's index in
the run that wrote it) and `<cache>/<key>.json` ({index, ShardInfo}), written last: an entry without it is
incomplete and is computed again. A worker hard-links (or copies, across filesystems) the entry's files into the
run's spill directory under this run's shard index, so the later passes see the same files either way."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from plasma_pipeline.dedup import signatures
from plasma_pipeline.dedup.config import DedupConfig
from plasma_pipeline.dedup.io import Shard
from plasma_pipeline.dedup.signatures import ShardInfo
from plasma_pipeline.dedup.spill import Spill

SIGNATURE_FILES = ("bands", "exact", "length", "source", "words", "ids")


@dataclass
class SignatureCache:
    """Where the signature entries live, and the key of each input shard (None: not cached)."""

    dir: str
    keys: list[str | None]

    @staticmethod
    def key(code_version: str, shard_sha256: str) -> str:
        return hashlib.sha256(f"{code_version}\nsignatures\n{shard_sha256}".encode()).hexdigest()[:32]

    def done(self, i: int) -> bool:
        k = self.keys[i]
        return k is not None and os.path.exists(os.path.join(self.dir, f"{k}.json"))


def _link(src: Path, dst: Path) -> None:
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def signatures_job(shard: Shard, shard_index: int, cfg: DedupConfig, spill_root: str, cache_dir: str | None,
                   key: str | None) -> tuple[ShardInfo, bool]:
    """Worker: (the shard's ShardInfo, reused?) with its signature files in `spill_root`, from the cache entry
    `key` when complete, else computed (into the entry when there is a key)."""
    if key is None or cache_dir is None:
        return signatures.spill_signatures(shard, shard_index, cfg, spill_root), False
    cache = Path(cache_dir)
    entry, done = cache / key, cache / f"{key}.json"
    reused = done.exists()
    if reused:
        saved = json.loads(done.read_text())
        index, info = saved["index"], ShardInfo(**saved["info"])
    else:
        shutil.rmtree(entry, ignore_errors=True)  # a half-written entry of a killed run
        entry.mkdir(parents=True)
        index, info = shard_index, signatures.spill_signatures(shard, shard_index, cfg, str(entry))
        tmp = cache / f".{key}.json.{os.getpid()}"
        tmp.write_text(json.dumps({"index": index, "info": dataclasses.asdict(info)}))
        os.replace(tmp, done)  # last: the entry is complete
    src, dst = Spill(entry), Spill(spill_root)
    for what in SIGNATURE_FILES:
        _link(src.shard(index, what), dst.shard(shard_index, what))
    return info, reused
