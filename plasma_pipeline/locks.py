"""Locks that die with their holder: the store's writer lock, read leases, and "is anyone still using this?" probes.

Everything here rests on flock(2): a lock belongs to an open file description and the kernel drops it when the
holder exits, kill -9 included, so no lock outlives a dead process and no pid bookkeeping is needed. The writer
lock is `filelock.FileLock` (a maintained library, same flock underneath); read leases need a *shared* lock,
which filelock does not offer, so they use fcntl directly.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock


def writer_lock(asset_dir: Path, timeout: float = 600.0) -> FileLock:
    """The one lock per asset that serialises publish, retention, CURRENT updates and gc."""
    asset_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(str(asset_dir / ".lock"), timeout=timeout)


def is_held(lock_file: Path) -> bool:
    """True when some live process holds a flock (shared or exclusive) on `lock_file`."""
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return True
        raise
    finally:
        os.close(fd)  # closing drops the probe's own lock, if it got one
    return False


class HeldFile:
    """An exclusive flock on a marker file, held until `release()` (or until the process dies)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self, unlink: bool = True) -> None:
        if self.fd is None:
            return
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self.fd)
        self.fd = None


LEASE_DIR = ".leases"


def _age_s(path: Path) -> float:
    import time

    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


@contextlib.contextmanager
def read_lease(asset_dir: Path, version_id: str) -> Iterator[Path]:
    """Hold a shared lease on one version while reading it; retention never deletes a leased version."""
    d = asset_dir / LEASE_DIR
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{version_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}.lease"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def leased_versions(asset_dir: Path, sweep: bool = True) -> dict[str, int]:
    """{version id: live leases}; lease files of dead holders are removed when `sweep`."""
    out: dict[str, int] = {}
    d = asset_dir / LEASE_DIR
    if not d.is_dir():
        return out
    for p in d.glob("*.lease"):
        if is_held(p):
            vid = p.name.split(".", 1)[0]
            out[vid] = out.get(vid, 0) + 1
        elif sweep and _age_s(p) > 30:  # a young file may be one whose holder is about to lock it
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return out
