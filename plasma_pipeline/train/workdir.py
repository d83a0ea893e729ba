"""Process safety around a trainer's work dir: die with the parent, one trainer per work dir.

Stdlib only, so the pipeline (e.g. retention deciding whether a work dir may be deleted) can use it without
importing torch.

- die_with_parent(): on Linux, ask the kernel for SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG), then
  close the race where the parent died before that call: if PLASMA_PARENT_PID is set and is no longer our
  parent, exit at once. The trainer turns SIGTERM into "checkpoint at the step boundary and exit 143".
- WorkDirLock / lock_workdir(): an exclusive flock on out_dir/.trainer.lock, held for the whole run. The kernel
  drops it when the process dies, kill -9 included, so a stale lock file never blocks anyone. A second trainer
  waits up to a timeout (the first may still be writing its last checkpoint after a SIGTERM), then fails.
- is_locked(): whether a live process holds the lock, without taking it for longer than an instant.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Callable

LOCK_NAME = ".trainer.lock"
PARENT_PID_ENV = "PLASMA_PARENT_PID"
EXIT_PARENT_GONE = 143  # as if the SIGTERM from PR_SET_PDEATHSIG had arrived: 128 + SIGTERM
EXIT_LOCKED = 75  # EX_TEMPFAIL: another trainer holds the work dir; trying again later may work
PR_SET_PDEATHSIG = 1

try:
    import fcntl
except ImportError:  # not POSIX: locking becomes a no-op
    fcntl = None  # type: ignore[assignment]


class WorkDirLocked(RuntimeError):
    """Another live process holds out_dir/.trainer.lock and did not let go within the timeout."""

    def __init__(self, out_dir: Path, holder: str | None, waited_s: float):
        self.out_dir, self.holder, self.waited_s = out_dir, holder, waited_s
        who = f"pid {holder}" if holder else "pid unknown"
        super().__init__(f"work dir {out_dir} is in use by another trainer ({who}, lock {out_dir / LOCK_NAME}); "
                         f"gave up after waiting {waited_s:.0f} s (lock_timeout_s)")


# ----------------------------------------------------------------------------- parent death


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """prctl(PR_SET_PDEATHSIG, sig) through libc; True if set, False where unsupported (non-Linux, no libc).

    The kernel sends sig when the *thread* that forked us exits, so the launcher must wait for the child from a
    thread that lives as long as the child (subprocess.run / Popen.wait in that thread do)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return True


def parent_gone(env: str = PARENT_PID_ENV) -> str | None:
    """Why the parent named in $PLASMA_PARENT_PID is no longer ours (it died and we were re-parented), or None."""
    want = os.environ.get(env, "").strip()
    if not want:
        return None
    try:
        want_pid = int(want)
    except ValueError:
        return None
    have = os.getppid()
    if have == want_pid:
        return None
    return f"parent process {want_pid} ({env}) is gone (our parent is now pid {have}); not starting"


def die_with_parent(env: str = PARENT_PID_ENV) -> None:
    """Call first thing in the trainer CLI: SIGTERM on parent death, and exit now if the parent already died."""
    if not set_parent_death_signal(signal.SIGTERM):
        return
    why = parent_gone(env)
    if why is not None:
        print(f"plasma_pipeline.train: {why}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_PARENT_GONE)


# ----------------------------------------------------------------------------- work dir lock


def lock_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / LOCK_NAME


def _read_holder(path: Path) -> str | None:
    """'1234' (same host) or '1234 on otherhost' from the lock file; None if empty or unreadable."""
    try:
        parts = path.read_text().split()
    except OSError:
        return None
    if not parts:
        return None
    if len(parts) > 1 and parts[1] != socket.gethostname():
        return f"{parts[0]} on {parts[1]}"
    return parts[0]


def holder_pid(out_dir: str | Path) -> int | None:
    """The pid the last lock holder wrote into the lock file (meaningful only while is_locked())."""
    try:
        return int(lock_path(out_dir).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def is_locked(out_dir: str | Path) -> bool:
    """True while a live process (a trainer) holds out_dir/.trainer.lock. Never creates the file.

    Takes the lock for an instant when it is free, so a trainer starting at that moment waits one poll."""
    if fcntl is None:
        return False
    try:
        fd = os.open(lock_path(out_dir), os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return True
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class WorkDirLock:
    """Exclusive flock on out_dir/.trainer.lock; a context manager. The holder's pid is written into the file."""

    POLL_S = 0.25

    def __init__(self, out_dir: str | Path, create: bool = True):
        self.out_dir = Path(out_dir)
        self.path = lock_path(out_dir)
        self.create = create
        self.fd: int | None = None

    def _try_once(self) -> bool:
        if self.create:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by exec'd children (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        try:  # the file we locked must still be the one at the path (not unlinked by a deleter meanwhile)
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return True

    def acquire(self, timeout_s: float = 0.0, log: Callable[[str], None] | None = None) -> "WorkDirLock":
        """Take the lock, waiting up to timeout_s (logging once that we wait); raises WorkDirLocked after that."""
        if fcntl is None or self.fd is not None:
            return self
        t0 = time.monotonic()
        said = False
        while not self._try_once():
            waited = time.monotonic() - t0
            if waited >= timeout_s:
                raise WorkDirLocked(self.out_dir, _read_holder(self.path), waited)
            if not said and log is not None:
                holder = _read_holder(self.path)
                log(f"waiting for the trainer holding {self.path} (pid {holder or 'unknown'}), "
                    f"up to {timeout_s:.0f} s")
                said = True
            time.sleep(min(self.POLL_S, max(0.0, timeout_s - waited)))
        return self

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)  # closing the only descriptor drops the flock

    @property
    def held(self) -> bool:
        return self.fd is not None

    def __enter__(self) -> "WorkDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_workdir(out_dir: str | Path, timeout_s: float = 0.0,
                 log: Callable[[str], None] | None = None) -> WorkDirLock:
    """WorkDirLock(out_dir).acquire(timeout_s, log); release() it (or use it in a with block) when done."""
    return WorkDirLock(out_dir).acquire(timeout_s, log)


def try_lock(out_dir: str | Path) -> WorkDirLock | None:
    """The lock if free right now, else None (held by a live process, or out_dir is not a directory): for a
    deleter that must keep trainers out while it deletes. Does not create out_dir."""
    if not Path(out_dir).is_dir():
        return None
    try:
        return WorkDirLock(out_dir, create=False).acquire(0.0)
    except (WorkDirLocked, FileNotFoundError):
        return None
