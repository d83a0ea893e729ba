"""Killing a run for real in the middle: the resume tests' common step."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def kill_when_done(cmd: list[str], cache: Path, pattern: str, at: int, env: dict | None = None,
                   timeout: float = 120) -> int:
    """Start `cmd`, SIGKILL it as soon as `at` complete results (files matching `pattern`) are in `cache`, and
    return how many there are after the kill."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    deadline = time.time() + timeout
    while time.time() < deadline and len(list(cache.glob(pattern))) < at:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    return len(list(cache.glob(pattern)))
