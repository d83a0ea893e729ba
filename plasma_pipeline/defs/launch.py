"""The one seam through which the training assets start the trainer: a Dagster Pipes client per recipe `launcher:`.

- `subprocess` (default): the `pipes` resource, dg.PipesSubprocessClient: a child of the step process.
- `dask`: PipesDaskClient: a task on the Dask cluster at `launcher.address` (plasma_pipeline/launch/dask_worker.py
  runs there), e.g. a scheduler whose GPU host runs `dask worker --resources GPU=1`.

Either way the trainer runs under Pipes with the same command and settings, so it reports the same logs, metrics
and materialization, and writes the same work dir: a model trained through either client is the same version.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError, DagsterPipesExecutionError
from dagster._core.pipes.client import PipesClientCompletedInvocation, PipesMessageReader, PipesParams
from dagster._core.pipes.context import PipesMessageHandler

from plasma_pipeline.launch import LauncherConfig
from plasma_pipeline.launch.dask_worker import WORKER_PYTHON, run_trainer

TRAINER_MODULE = "plasma_pipeline.train"
RANKS_MODULE = "plasma_pipeline.train.ranks"  # torchrun on this host, for `gpus: N` (N > 1)
POLL_S = 0.2


class PipesDaskQueueMessageReader(PipesMessageReader):
    """Reads what dask_worker.run_trainer relays through a named Dask queue: Pipes messages go to the handler
    (logs, metrics, the materialization), the trainer's stdout/stderr to this step's (Dagster's compute logs)."""

    def __init__(self, client, queue_name: str):
        self.client, self.queue_name = client, queue_name
        self.ended = threading.Event()  # the task relayed its trainer's exit

    @contextmanager
    def read_messages(self, handler: PipesMessageHandler) -> Iterator[PipesParams]:
        from distributed import Queue

        queue = Queue(self.queue_name, client=self.client)
        closed = threading.Event()

        def pump() -> None:
            try:
                while not self.ended.is_set():
                    # Non-blocking batches: a blocking get that times out is logged as an error by the scheduler.
                    was_closed = closed.is_set()
                    batches = queue.get(batch=True)
                    if not batches:
                        if was_closed:  # the session is over and the task sent nothing more: it died
                            return
                        time.sleep(POLL_S)
                        continue
                    for kind, text in (item for batch in batches for item in batch):
                        if kind == "pipes":
                            handler.handle_message(json.loads(text))
                        elif kind == "stdout":
                            sys.stdout.write(text)
                        elif kind == "stderr":
                            sys.stderr.write(text)
                        elif kind == "end":
                            self.ended.set()
            except Exception:
                handler.report_pipes_framework_exception(f"{type(self).__name__} reader thread", sys.exc_info())
                raise

        thread = threading.Thread(target=pump, name="pipes-dask-queue", daemon=True)
        thread.start()
        try:
            # The worker adds the path of its local message file: no disk is shared for Pipes.
            yield {"include_stdio_in_messages": False}
        finally:
            closed.set()
            thread.join()
            try:
                queue.close()  # drop the scheduler-side queue
            except Exception:  # noqa: BLE001 - the scheduler may be gone; nothing is left to clean then
                pass

    def no_messages_debug_text(self) -> str:
        return f"Attempted to read messages relayed by the Dask task through queue {self.queue_name}."


class PipesDaskClient(dg.PipesClient):
    """Runs a command as a Dask task under Pipes; the task runs it as a child process on its worker.

    `command[0] == WORKER_PYTHON` stands for the worker's interpreter. Context goes in an env var
    (PipesEnvContextInjector), messages come back through a Dask queue. The step waits for the task; if it is
    interrupted it cancels the task, whose trainer then gets SIGINT and is given `termination_timeout_s` to
    checkpoint and exit, and the step waits that long for it to end."""

    def __init__(self, address: str, resources: Mapping[str, float] | None = None, connect_timeout_s: float = 30.0,
                 termination_timeout_s: float = 20.0):
        self.address = address
        self.resources = dict(resources or {})
        self.connect_timeout_s = connect_timeout_s
        self.termination_timeout_s = termination_timeout_s

    def run(  # type: ignore[override]
        self,
        *,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        command: Sequence[str],
        extras: Mapping | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> PipesClientCompletedInvocation:
        from distributed import Client

        tag = uuid.uuid4().hex[:12]
        client = Client(self.address, timeout=self.connect_timeout_s, set_as_default=False)
        try:
            reader = PipesDaskQueueMessageReader(client, f"plasma-pipes-{tag}")
            with dg.open_pipes_session(
                context=context, context_injector=dg.PipesEnvContextInjector(), message_reader=reader, extras=extras
            ) as session:
                future = client.submit(
                    run_trainer, list(command), {**(env or {}), **session.get_bootstrap_env_vars()}, cwd,
                    reader.queue_name, self.termination_timeout_s,
                    key=f"plasma-trainer-{context.run.run_id[:8]}-{tag}", resources=self.resources or None, pure=False,
                )
                context.log.info(f"[pipes] trainer submitted to the Dask cluster at {self.address} as {future.key}"
                                 + (f" (needs worker resources {self.resources})" if self.resources else ""))
                try:
                    result = _wait(future)
                except DagsterExecutionInterruptedError:
                    context.log.info("[pipes] execution interrupted, cancelling the Dask task (the trainer gets "
                                     "SIGINT and checkpoints).")
                    client.cancel(future)
                    reader.ended.wait(self.termination_timeout_s + 10)
                    raise
                if result["returncode"] != 0:
                    tail = result["stderr_tail"].strip()
                    raise DagsterPipesExecutionError(
                        f"trainer on Dask worker {result['host']} (pid {result['pid']}) failed with code "
                        f"{result['returncode']}" + (f"; end of its stderr:\n{tail}" if tail else "")
                    )
        finally:
            client.close()
        return PipesClientCompletedInvocation(session)


def _wait(future):
    # In short waits, so the step's interrupt (raised by a signal handler in this thread) is seen promptly.
    while True:
        try:
            return future.result(timeout=1.0)
        except TimeoutError:
            continue


def launch_trainer(
    context: dg.AssetExecutionContext, launcher: LauncherConfig | None, local: dg.PipesSubprocessClient,
    config_path: str, extras: Mapping,
) -> PipesClientCompletedInvocation:
    """Start `python -m plasma_pipeline.train --config <config_path>` with the client `launcher` names (None: the
    default, `local`); wait for it to end."""
    launcher = launcher or LauncherConfig()
    args = ["-m", TRAINER_MODULE, "--config", str(config_path)]
    with open(config_path) as f:
        gpus = int(json.load(f).get("gpus", 1))
    if gpus > 1:  # data parallel: rank 0 reports through Pipes, a failing rank fails the launch
        args = ["-m", RANKS_MODULE, str(gpus), "--config", str(config_path)]
    if launcher.kind == "dask":
        client = PipesDaskClient(launcher.address, launcher.resources, launcher.connect_timeout_s,
                                 launcher.termination_timeout_s)
        return client.run(command=[WORKER_PYTHON, *args], context=context, extras=extras)
    return local.run(
        command=[sys.executable, *args], context=context, extras=extras,
        # The trainer sets PR_SET_PDEATHSIG and exits if this process is already gone: no orphan trainers.
        env={"PLASMA_PARENT_PID": str(os.getpid())},
    )

