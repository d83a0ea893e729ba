"""Retention and garbage collection: what the store may delete, and what it must keep.

A version beyond `store.keep_versions` is deleted only when nothing pins it:
  - a live version of any asset lists it in its manifest `inputs` (a kept downstream version was built from it);
  - a trainer work dir that is still resumable (not yet published, or held by a running trainer) was keyed on it;
  - a running step holds a read lease on it.
The current version is never deleted. Deletion renames the folder out of `versions/` first (one atomic step, so
no half-deleted folder ever looks like a version), records a delete event in history.jsonl, then removes it.
Leftovers of killed runs (`.tmp-*` folders whose lock nobody holds, trash, stale lease files) are swept at the
asset's next write and by `plasma gc`. Callers of `retain` hold the asset's writer lock; `gc` takes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from plasma_pipeline import locks

if TYPE_CHECKING:
    from plasma_pipeline.shards import ShardStore

TRAINER_LOCK = ".trainer.lock"
_NO_LOCK_GRACE_S = 3600  # a .tmp folder with no lock file predates lock files: sweep it only when clearly old


@dataclass
class Removal:
    kind: str  # version | work | leftover | cache
    path: Path | str  # a URL on object storage
    reason: str

    def __str__(self) -> str:
        return f"{self.kind:8s} {self.path}  ({self.reason})"


def asset_dirs(root: Path) -> dict[str, Path]:
    """{asset key: folder} for every asset under the store root."""
    out: dict[str, Path] = {}
    root = Path(root)
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        is_asset = (
            "CURRENT" in filenames or "history.jsonl" in filenames or "versions" in dirnames
            or ("work" in dirnames and any((here / "work").glob("*/pins.json")))
        )
        if is_asset:
            out["/".join(here.relative_to(root).parts)] = here
            # An asset folder holds no asset folders below versions/, work/ or hidden scratch.
            dirnames[:] = [d for d in dirnames if d not in ("versions", "work")]
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return out


def _live_manifests(base: Path):
    from plasma_pipeline.shards import MANIFEST, live_versions

    for v in live_versions(base):
        try:
            yield v, json.loads((base / "versions" / v / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError):
            continue


def work_dirs(base: Path) -> list[Path]:
    w = base / "work"
    return sorted(p for p in w.iterdir() if p.is_dir()) if w.is_dir() else []


def _work_pins(work: Path) -> dict:
    try:
        return json.loads((work / "pins.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def work_is_resumable(work: Path) -> bool:
    """Not yet published, or a trainer is running in it right now."""
    return locks.is_held(work / TRAINER_LOCK) or not _work_pins(work).get("published")


def pins(store: "ShardStore", asset: str) -> dict[str, str]:
    """{version id of `asset`: why it must be kept}."""
    if not isinstance(store.root, Path):
        from plasma_pipeline.object_store import pins_objects

        return pins_objects(store, asset)
    out: dict[str, str] = {}
    for other, base in asset_dirs(store.root).items():
        for vid, mf in _live_manifests(base):
            ref = (mf.get("inputs") or {}).get(asset)
            if ref:
                out.setdefault(ref, f"input of {other}@{vid}")
        for work in work_dirs(base):
            ref = (_work_pins(work).get("inputs") or {}).get(asset)
            if ref and work_is_resumable(work):
                out.setdefault(ref, f"resumable trainer work dir {work}")
    for vid, n in locks.leased_versions(store.asset_dir(asset)).items():
        out.setdefault(vid, f"read by {n} running step(s)")
    return out


def sweep_leftovers(base: Path, dry_run: bool = False) -> list[Removal]:
    """Temp folders of dead writers, trash of interrupted deletes, orphan lock files."""
    from plasma_pipeline.shards import TMP_PREFIX

    found: list[Removal] = []
    if not base.is_dir():
        return found
    now = time.time()
    for p in base.iterdir():
        name = p.name
        if name.startswith(TMP_PREFIX) and p.is_dir():
            lock = base / f"{name}.lock"
            if lock.exists():
                if not locks.is_held(lock):
                    found.append(Removal("leftover", p, "temp folder of a writer that died"))
            else:
                with contextlib.suppress(FileNotFoundError):
                    if now - p.stat().st_mtime > _NO_LOCK_GRACE_S:
                        found.append(Removal("leftover", p, "old temp folder without a lock"))
        elif name.startswith(TMP_PREFIX) and name.endswith(".lock"):
            if not (base / name[: -len(".lock")]).exists() and not locks.is_held(p):
                found.append(Removal("leftover", p, "lock file of a finished writer"))
        elif name.startswith(".trash-"):
            found.append(Removal("leftover", p, "version deleted by an interrupted retention"))
        elif name.startswith(".CURRENT.") or name.startswith(".pins.json."):
            with contextlib.suppress(FileNotFoundError):
                if now - p.stat().st_mtime > 60:
                    found.append(Removal("leftover", p, "temp file of an interrupted CURRENT update"))
    if not dry_run:
        for r in found:
            _remove(r.path)
        locks.leased_versions(base, sweep=True)
    return found


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def retain(store: "ShardStore", asset: str, dry_run: bool = False) -> list[Removal]:
    """Apply the retention policy to one asset; the caller holds its writer lock."""
    from plasma_pipeline.shards import append_history, live_versions

    if not isinstance(store.root, Path):  # object storage: same policy, no rename
        from plasma_pipeline.object_store import retain_objects

        return retain_objects(store, asset, dry_run=dry_run)

    base = store.asset_dir(asset)
    order = list(reversed(live_versions(base)))  # newest first
    cur = base / "CURRENT"
    current = cur.read_text().strip() if cur.exists() else None
    keep = set(order[: store.cfg.keep_versions]) | ({current} if current else set())
    pinned = pins(store, asset)
    plan: list[Removal] = []
    versions = base / "versions"
    if versions.is_dir():
        for d in sorted(versions.iterdir()):
            if d.name in keep or d.name in pinned:
                continue
            plan.append(Removal("version", d, f"beyond keep_versions={store.cfg.keep_versions}, not pinned"))
    gone = {r.path.name for r in plan}
    live_after = {v for v in order if v not in gone}
    for work in work_dirs(base):
        if work_is_resumable(work):
            continue
        published = _work_pins(work).get("published")
        if published not in live_after:
            plan.append(Removal("work", work, f"trainer work dir of {asset}@{published}, which is no longer kept"))
    if dry_run:
        return plan + sweep_leftovers(base, dry_run=True)
    done = []
    for r in plan:
        if r.kind == "version":
            if delete_version(base, r.path, r.reason):
                done.append(r)
        else:
            shutil.rmtree(r.path, ignore_errors=True)
            done.append(r)
    return done + sweep_leftovers(base)


def delete_version(base: Path, path: Path, reason: str) -> bool:
    """Move a version out of versions/, then delete it, unless a read lease was taken after the pins were read.

    A reader takes its lease first and then looks for the version; retention moves the version away first and
    then looks for leases. So either the reader finds the version gone (a clear error, nothing half-read), or
    retention finds the lease and puts the version back: never a version deleted under a reader. (A lease seen
    before the move skips it altogether, so a reader can only meet the moved-away version in the instant
    between that look and the move.)"""
    from plasma_pipeline.shards import append_history  # shards imports this module

    if locks.leased_versions(base, sweep=False).get(path.name):
        return False
    trash = base / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
    os.rename(path, trash)
    if locks.leased_versions(base, sweep=False).get(path.name):
        os.rename(trash, path)
        return False
    append_history(base, {"event": "delete", "version": path.name, "reason": reason})
    shutil.rmtree(trash, ignore_errors=True)
    return True


def gc(store: "ShardStore", dry_run: bool = False) -> list[Removal]:
    """Retention over every asset in the store, plus leftovers; what `plasma gc` runs."""
    if not isinstance(store.root, Path):
        from plasma_pipeline.object_store import gc_objects

        return gc_objects(store, dry_run=dry_run)
    out: list[Removal] = []
    # Downstream assets first: deleting a downstream version can release the pins it holds on its parents.
    for asset in sorted(asset_dirs(store.root), key=lambda a: _references_to(store, a)):
        with store.lock(asset):
            out += retain(store, asset, dry_run=dry_run)
    return out


def _references_to(store: "ShardStore", asset: str) -> int:
    """Live manifests that list `asset` as an input: few for downstream assets, many for upstream ones."""
    n = 0
    for base in asset_dirs(store.root).values():
        for _, mf in _live_manifests(base):
            if asset in (mf.get("inputs") or {}):
                n += 1
    return n
