"""The one seam for per-shard work: every stage's pool (clean and score shards, dedup signatures and shingles,
mix tokenising and packing, the `plasma clean` / `plasma dedup` part pools) maps its tasks through the executor
that is current, so the same stage code runs in local worker processes or as Dask futures on a cluster.

    executor: {kind: local}                                   # the default: spawned processes on this machine
    executor: {kind: dask, address: "tcp://10.0.0.5:8786"}    # a running Dask scheduler (its workers do the work)
    executor: {kind: dask, workers: 4}                        # a LocalCluster of 4 processes started for the run

`map(func, items, processes)` yields `(item, func(*item))` in input order with a bounded number of tasks in
flight, so memory follows task size, not corpus size, and the output does not depend on the executor: stages
write what the tasks return (or the files the tasks wrote) in input order. `processes` is what the calling stage
asks for on this machine (its memory plan, `store.processes`); the local executor honours it (1 = inline, in
this process), a Dask cluster runs every task on its workers, as many at once as it has threads.

Tasks are plain module-level functions over picklable arguments and the files they name, so a Dask worker must
see the same paths as the caller (one machine, or a shared filesystem / object store for the store root).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import contextvars
import multiprocessing
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

KINDS = ("local", "dask")


@dataclass
class ExecutorConfig:
    """The recipe's `executor:` section."""

    kind: Literal["local", "dask"] = "local"
    # dask: the scheduler's address ("tcp://host:8786"); empty = start a LocalCluster of `workers` processes
    address: str = ""
    # local: at most this many worker processes in any stage's pool (0 = each stage's own setting);
    # dask: workers of the LocalCluster started when there is no address (0 = one per core), or with an address
    # the tasks kept in flight, halved (0 = two per worker thread of the cluster)
    workers: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers: must be an integer >= 0, got {self.workers!r}")
        if self.address and self.kind != "dask":
            raise ValueError(f"address: only a dask executor takes an address (kind is {self.kind!r})")


def _pending_map(submit: Callable, result: Callable, items: Iterable[tuple], in_flight: int) -> Iterator[tuple]:
    """(item, result) in input order, at most `in_flight` submitted tasks not yet yielded."""
    pending: list[tuple[tuple, Any]] = []
    it = iter(items)
    try:
        for item in it:
            pending.append((item, submit(item)))
            if len(pending) >= in_flight:
                break
        while pending:
            item, fut = pending.pop(0)
            out = result(fut)
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, submit(nxt)))
            yield item, out
    finally:
        for _, fut in pending:
            fut.cancel()


def _wait_for_all(barrier: Any) -> None:
    barrier.wait(timeout=600)


class LocalExecutor:
    """Spawned worker processes on this machine (spawn, not fork: a Dagster run has threads, and forking a
    threaded process can deadlock); `processes <= 1` runs the tasks inline, lazily, in this process."""

    kind = "local"

    def __init__(self, max_workers: int = 0):
        self.max_workers = max_workers

    def processes(self, wanted: int) -> int:
        return min(wanted, self.max_workers) if self.max_workers else wanted

    def map(self, func: Callable, items: Iterable[tuple], processes: int, env: dict[str, str] | None = None,
            all_up: bool = False) -> Iterator[tuple[tuple, Any]]:
        """`func(*item)` per item, in order. `env`: variables the workers start with (thread caps of their
        libraries). `all_up`: every worker is started before the first task is taken (so a small job is still
        spread over all of them)."""
        from plasma_pipeline.shard_work import environ_set

        n = self.processes(processes)
        if hasattr(items, "__len__"):
            n = min(n, len(items))
        if n <= 1:  # lazily: a stage handing over a generator of tables holds one at a time
            for item in items:
                yield item, func(*item)
            return
        ctx = multiprocessing.get_context("spawn")
        init = {"initializer": _wait_for_all, "initargs": (ctx.Barrier(n),)} if all_up else {}
        with cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, **init) as pool:
            with environ_set(env or {}, keep_existing=True):  # workers start at the first submissions
                results = _pending_map(lambda item: pool.submit(func, *item), cf.Future.result, items, 2 * n)
                first = next(results, None)
            if first is not None:
                yield first
                yield from results

    def close(self) -> None:
        pass


def _call_with_env(env: dict[str, str], func: Callable, *args: Any) -> Any:
    """On a Dask worker: the caller's thread caps for libraries not yet started there, then the task."""
    for k, v in env.items():
        os.environ.setdefault(k, v)
    return func(*args)


class DaskExecutor:
    """Tasks as Dask futures on a `distributed` cluster: the scheduler at `address`, or a LocalCluster of
    `workers` single-threaded processes started here (and closed with the executor)."""

    kind = "dask"

    def __init__(self, address: str = "", workers: int = 0):
        from distributed import Client, LocalCluster

        self.cluster = None
        if address:
            self.client = Client(address, set_as_default=False)
        else:
            self.cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                        processes=True, dashboard_address=None)
            self.client = Client(self.cluster, set_as_default=False)
        self.in_flight = 2 * workers if address and workers else 0

    def _slots(self) -> int:
        if self.in_flight:
            return self.in_flight
        threads = sum(self.client.nthreads().values())
        return 2 * max(1, threads)

    def processes(self, wanted: int) -> int:
        return self._slots() // 2

    def map(self, func: Callable, items: Iterable[tuple], processes: int, env: dict[str, str] | None = None,
            all_up: bool = False) -> Iterator[tuple[tuple, Any]]:
        name = getattr(func, "__name__", "task")

        def submit(item: tuple):  # keyed by the stage's function, so the dashboard names the work
            return self.client.submit(_call_with_env, env or {}, func, *item, key=f"{name}-{uuid.uuid4().hex}")

        yield from _pending_map(submit, lambda fut: fut.result(), items, self._slots())

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


Executor = LocalExecutor | DaskExecutor
_CURRENT: contextvars.ContextVar[Executor | None] = contextvars.ContextVar("plasma_executor", default=None)


def current() -> Executor:
    """The executor set by `use`, else local processes."""
    return _CURRENT.get() or LocalExecutor()


def make(cfg: ExecutorConfig) -> Executor:
    if cfg.kind == "dask":
        return DaskExecutor(cfg.address, cfg.workers)
    return LocalExecutor(cfg.workers)


@contextlib.contextmanager
def use(cfg: ExecutorConfig | Executor | None) -> Iterator[Executor]:
    """Make `cfg`'s executor the current one for the block (a Dask client is connected once and closed after)."""
    if cfg is None:
        cfg = ExecutorConfig()
    ex = make(cfg) if isinstance(cfg, ExecutorConfig) else cfg
    token = _CURRENT.set(ex)
    try:
        yield ex
    finally:
        _CURRENT.reset(token)
        if isinstance(cfg, ExecutorConfig):
            ex.close()


def ordered_map(func: Callable, items: Iterable[tuple], processes: int, env: dict[str, str] | None = None,
                all_up: bool = False) -> Iterator[tuple[tuple, Any]]:
    """`(item, func(*item))` in input order through the current executor."""
    return current().map(func, items, processes, env=env, all_up=all_up)
