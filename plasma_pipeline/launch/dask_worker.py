"""The trainer as a Dask task: run it as a child of the worker, relay its Pipes messages and stdio to the step.

Runs on the Dask worker (imported there by reference when the task arrives), so it needs only the stdlib,
`distributed` and `dagster_pipes`, never Dagster. The orchestrator side is plasma_pipeline/defs/launch.py.

Why a relay and not a shared message file: the Dagster step and the GPU host need not share a disk for Pipes. The
trainer writes Pipes messages with dagster_pipes' ordinary file writer to a file local to the worker; this task
tails that file and the trainer's stdout/stderr and puts what is new into a named Dask queue every POLL_S, which
the step's message reader empties. The last item is ("end", returncode).

The trainer's life follows the task's, as a local trainer's follows its step:
- it is a child of this worker with PLASMA_PARENT_PID set to the worker's pid, so the trainer's
  PR_SET_PDEATHSIG takes it down if the worker dies (the forking thread is this task's, alive until it exits);
- when the task is cancelled (the step was interrupted, or its process died and the scheduler dropped its
  client), the trainer gets SIGINT as from a local Pipes client: it checkpoints at the step boundary and exits;
  after `termination_timeout_s` it is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The first element of a command that stands for the worker's own interpreter: the step's sys.executable is a
# path on the orchestrator host, meaningless on the GPU host.
WORKER_PYTHON = "{worker_python}"
PARENT_PID_ENV = "PLASMA_PARENT_PID"  # as plasma_pipeline.train.workdir reads it
POLL_S = 0.2
TAIL_BYTES = 4000  # of the trainer's stderr, returned for the step's error message


class _Tail:
    """New complete lines (messages) or new bytes (stdio) of a file that another process appends to."""

    def __init__(self, path: Path):
        self.path, self.pos, self.partial = path, 0, b""

    def read(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return b""
        self.pos += len(data)
        return data

    def lines(self, final: bool = False) -> list[str]:
        buf = self.partial + self.read()
        *done, self.partial = buf.split(b"\n")
        if final and self.partial:
            done, self.partial = done + [self.partial], b""
        return [line.decode("utf-8", "replace") for line in done if line.strip()]


def _task_state() -> str | None:
    """This task's state on its worker: 'executing' while it is wanted; 'cancelled' once the client cancelled it
    or went away (the scheduler released its key). None outside a Dask worker."""
    try:
        from distributed import get_worker
        from distributed.worker import thread_state

        ts = get_worker().state.tasks.get(thread_state.key)
    except (ImportError, ValueError, AttributeError):
        return None
    return ts.state if ts is not None else "released"


def run_trainer(command: list[str], env: dict[str, str], cwd: str | None, queue_name: str,
                termination_timeout_s: float = 20.0) -> dict:
    """Run `command` under Pipes on this worker; relay messages and stdio to `queue_name`. Returns the exit code,
    the worker's host and the tail of stderr."""
    import socket

    from dagster_pipes import DAGSTER_PIPES_MESSAGES_ENV_VAR, PipesDefaultMessageWriter, decode_param, encode_param
    from distributed import Queue

    queue = Queue(queue_name)
    command = [sys.executable if c == WORKER_PYTHON else c for c in command]
    with tempfile.TemporaryDirectory(prefix="plasma-pipes-") as tmp:
        tmp_path = Path(tmp)
        messages, out, err = tmp_path / "messages.jsonl", tmp_path / "stdout", tmp_path / "stderr"
        params = decode_param(env[DAGSTER_PIPES_MESSAGES_ENV_VAR]) if DAGSTER_PIPES_MESSAGES_ENV_VAR in env else {}
        params[PipesDefaultMessageWriter.FILE_PATH_KEY] = str(messages)
        child_env = {**os.environ, **env, DAGSTER_PIPES_MESSAGES_ENV_VAR: encode_param(params),
                     PARENT_PID_ENV: str(os.getpid())}
        tails = {"pipes": _Tail(messages), "stdout": _Tail(out), "stderr": _Tail(err)}
        err_tail = b""

        def relay(final: bool = False) -> None:
            nonlocal err_tail
            batch: list[tuple[str, str]] = [("pipes", line) for line in tails["pipes"].lines(final)]
            for name in ("stdout", "stderr"):
                data = tails[name].read()
                if data:
                    batch.append((name, data.decode("utf-8", "replace")))
                    if name == "stderr":
                        err_tail = (err_tail + data)[-TAIL_BYTES:]
            if batch:
                queue.put(batch)

        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(command, env=child_env, cwd=cwd, stdout=fo, stderr=fe)
            interrupted_at = None
            try:
                while proc.poll() is None:
                    time.sleep(POLL_S)
                    relay()
                    state = _task_state()
                    if interrupted_at is None and state not in (None, "executing"):
                        proc.send_signal(signal.SIGINT)  # as dg.PipesSubprocessClient forwards a termination
                        interrupted_at = time.monotonic()
                    elif interrupted_at is not None and time.monotonic() - interrupted_at > termination_timeout_s:
                        proc.kill()
            finally:
                if proc.poll() is None:  # this task is being torn down (the worker is closing): take the trainer too
                    proc.kill()
                proc.wait()
        relay(final=True)
        queue.put([("end", str(proc.returncode))])
    return {"returncode": proc.returncode, "host": socket.gethostname(), "pid": proc.pid,
            "stderr_tail": err_tail.decode("utf-8", "replace")}
