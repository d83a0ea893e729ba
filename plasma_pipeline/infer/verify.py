"""Reads verify: check a published version folder's files against its manifest.json before using them.

A store version folder (`<root>/<asset>/versions/<id>/`) holds a manifest.json listing every file with its
sha256. `verify_model_dir` re-hashes the files of a model version (model.safetensors, config.json,
tokenizer.model, metrics.jsonl, run.json) and raises `CorruptModelError` naming the first bad one, e.g.

    base_model version 1234: model.safetensors does not match its manifest hash — the file is corrupt;
    rematerialize base_model

A plain directory without manifest.json (a trainer's final/ folder, a hand-made model) is not verified: there is
nothing to check it against, and it loads as before. `verify_split` does the same for one split of a shard
version (e.g. the val/ shards the evaluation reads), so a reader need not hash the whole train split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from plasma_pipeline.shards import MANIFEST, CorruptShardError, file_sha256

# The files a model is loaded from: each must be covered by the manifest when the folder has one.
MODEL_FILES = ("model.safetensors", "config.json", "tokenizer.model")


class CorruptModelError(CorruptShardError):
    """A file of a published version does not match its manifest (or is missing from it / from disk)."""


def read_manifest(version_dir: str | Path) -> dict[str, Any] | None:
    """The folder's manifest.json as a dict, or None for a plain folder without one."""
    mf = Path(version_dir) / MANIFEST
    if not mf.exists():
        return None
    try:
        manifest = json.loads(mf.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CorruptModelError(f"{Path(version_dir)}: {MANIFEST} cannot be read ({e}) — rematerialize it") from e
    if not isinstance(manifest, dict):
        raise CorruptModelError(f"{Path(version_dir)}: {MANIFEST} is not a manifest object — rematerialize it")
    return manifest


def _who(manifest: dict[str, Any], d: Path) -> tuple[str, str]:
    asset = str(manifest.get("asset") or d.parent.parent.name or "asset")
    return asset, f"{asset} version {manifest.get('version') or d.name}"


def _check_entries(d: Path, manifest: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    asset, who = _who(manifest, d)
    for e in entries:
        rel = e.get("path")
        if not rel or not e.get("sha256"):
            raise CorruptModelError(f"{who}: manifest entry {e!r} has no path or sha256 — rematerialize {asset}")
        p = d / rel
        if not p.is_file():
            raise CorruptModelError(f"{who}: {rel} is missing (listed in its manifest) — rematerialize {asset}")
        if file_sha256(p) != e["sha256"]:
            raise CorruptModelError(
                f"{who}: {rel} does not match its manifest hash — the file is corrupt; rematerialize {asset}")


def verify_model_dir(model_dir: str | Path) -> dict[str, Any] | None:
    """Verify a model directory against its manifest.json; return the manifest, or None for a plain directory.

    Every file the manifest lists is re-hashed with plasma_pipeline.shards.file_sha256 (the weights dominate;
    hashing them on every load is the price of "reads verify"). The files a model is loaded from (MODEL_FILES)
    that exist on disk must be listed, so a file slipped into a version folder is refused too.
    Raises CorruptModelError (a CorruptShardError) whose message names the asset, the version and the file."""
    d = Path(model_dir)
    manifest = read_manifest(d)
    if manifest is None:
        return None
    entries = list(manifest.get("files", [])) + list(manifest.get("shards", []))
    listed = {e.get("path") for e in entries}
    asset, who = _who(manifest, d)
    for name in MODEL_FILES:
        if (d / name).exists() and name not in listed:
            raise CorruptModelError(f"{who}: {name} is not covered by its manifest — rematerialize {asset}")
    _check_entries(d, manifest, entries)
    return manifest


def verify_split(shards_dir: str | Path, split: str) -> dict[str, Any] | None:
    """Verify the shards of one split (e.g. "val") of a shard version folder; None for a plain folder.

    Every `<split>/*.parquet` on disk must be listed in the manifest and match its hash."""
    d = Path(shards_dir)
    manifest = read_manifest(d)
    if manifest is None:
        return None
    entries = [s for s in manifest.get("shards", []) if s.get("split", "") == split]
    listed = {e.get("path") for e in entries}
    asset, who = _who(manifest, d)
    for p in sorted((d / split).glob("*.parquet")):
        rel = str(p.relative_to(d))
        if rel not in listed:
            raise CorruptModelError(f"{who}: {rel} is not covered by its manifest — rematerialize {asset}")
    _check_entries(d, manifest, entries)
    return manifest
