"""Finding runs whose processes died (kill -9, OOM, a closed laptop) and giving back what they held.

A run killed with SIGKILL writes nothing more: it stays STARTED in the instance forever and keeps its pool slots,
so the next `base_model` blocks on "Step blocked by limit for pool gpu" and, under `dagster dev`, dead runs count
against `max_concurrent_runs`. Dagster's run monitoring daemon cannot see this with the default run launcher
(`DefaultRunLauncher.supports_check_run_worker_health` is False: it only times out STARTING/CANCELING runs), and
nothing runs a daemon at all for `dagster asset materialize` or `plasma materialize`. So `plasma` does it here,
before every launch, and the `reap_dead_runs` sensor does it under `dagster dev`.

How a dead run is recognised, from what Dagster itself records (nothing needs to be written by the assets):
every event carries `DagsterEvent.pid`, the pid of the process that emitted it, and a timestamp. The events that
only a process executing the run emits (RUN_START, step events, engine events with a "pid" entry such as
"Executing steps using multiprocess executor: parent process (pid: …)" or the step worker's
"Executing step … in subprocess") name the run's workers: the orchestrator (the `dagster`/`plasma` process, or
the run worker under `dagster dev`) and each step subprocess of the multiprocess executor. Events written by
other processes for the run (RUN_ENQUEUED/STARTING/CANCELING from a launcher or the UI, the planned-materialization
events written at run creation, RUN_FAILURE from a reaper) are ignored, so a live webserver or daemon never keeps a
dead run "alive".

A worker pid is alive when /proc/<pid> exists, is not a zombie, and the process started no later than the last
event that pid wrote (plus a slack for clock steps). The last clause is the guard against pid reuse (pid_max is
32768 on this machine): a pid taken over by a new process after the worker died belongs to a process that started
after every event the worker wrote. A run is dead only when *every* worker pid is dead: an orchestrator killed
alone leaves its step subprocess (and the trainer under it) running on the GPU, and that run is left alone until
the step process is gone too. Runs with no worker event at all (a STARTING run whose worker never came up) are
left to run monitoring's `start_timeout_seconds`.

Limits: pids are only meaningful on the host (and pid namespace) that ran the run; this project's instance is a
local SQLite DAGSTER_HOME, so that holds. A trainer subprocess that outlives its step process is not a Dagster
worker and is not seen here (the trainer's parent-death signal handles it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType, JobFailureData, RunFailureReason
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

# Statuses in which a run is supposed to have a live worker.
ACTIVE_STATUSES = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]

# Events that only a process executing the run writes (see the module docstring). ENGINE_EVENTs qualify only
# with a step key or a "pid" metadata entry; launchers, the daemon and the UI write theirs with neither.
WORKER_EVENT_TYPES = {
    DagsterEventType.RUN_START,
    DagsterEventType.ENGINE_EVENT,
    DagsterEventType.STEP_WORKER_STARTING,
    DagsterEventType.STEP_WORKER_STARTED,
    DagsterEventType.STEP_START,
    DagsterEventType.STEP_INPUT,
    DagsterEventType.STEP_OUTPUT,
    DagsterEventType.STEP_SUCCESS,
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.STEP_SKIPPED,
    DagsterEventType.STEP_UP_FOR_RETRY,
    DagsterEventType.STEP_RESTARTED,
    DagsterEventType.RESOURCE_INIT_STARTED,
    DagsterEventType.RESOURCE_INIT_SUCCESS,
    DagsterEventType.RESOURCE_INIT_FAILURE,
    DagsterEventType.LOADED_INPUT,
    DagsterEventType.HANDLED_OUTPUT,
    DagsterEventType.ASSET_MATERIALIZATION,
    DagsterEventType.ASSET_OBSERVATION,
    DagsterEventType.ASSET_CHECK_EVALUATION,
    DagsterEventType.LOGS_CAPTURED,
}

# A pid counts as reused when its current process started more than this long after the last event the worker
# wrote. Larger than any plausible wall-clock step (a forward step could otherwise make a live worker look
# younger than its own events); a pid reused within this window keeps its run "alive" until it exits (the safe
# direction: a run is never reaped while a process that may be its worker lives).
PID_REUSE_SLACK_S = 30.0

REAPER_NAME = "plasma's dead-run reaper"


# ----------------------------------------------------------------------------------------------- processes


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def process_state(pid: int) -> tuple[str, float | None] | None:
    """(state letter, start time as a Unix timestamp) of a running pid from /proc/<pid>/stat, or None if no
    process has that pid. Start time is field 22 (clock ticks after boot) plus the boot time."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return ("?", None)
    # Field 2 (comm) is parenthesised and may hold spaces or ')' itself: split after the last ')'.
    rest = text[text.rindex(")") + 2:].split()
    state = rest[0]  # field 3
    boot = _boot_time()
    start = boot + int(rest[19]) / _clock_ticks() if boot is not None else None  # field 22
    return state, start


def process_alive(pid: int, last_seen: float | None = None) -> bool:
    """Whether `pid` is still the process that was seen (wrote an event) at `last_seen`.

    False when no process has the pid, when it is a zombie (killed, not yet waited for), or when the process
    holding it now started after `last_seen` + PID_REUSE_SLACK_S (the pid was reused). Without /proc (not Linux)
    only existence is checked, so a reused pid reads as alive: the safe direction."""
    if pid <= 0:
        return False
    if Path("/proc/self/stat").exists():
        st = process_state(pid)
        if st is None:
            return False
        state, start = st
        if state in ("Z", "X", "x"):
            return False
        if last_seen is not None and start is not None and start > last_seen + PID_REUSE_SLACK_S:
            return False
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------------- runs


@dataclass
class RunWorkers:
    """The processes Dagster's events name as executing one run: pid -> timestamp of the last event it wrote."""

    last_seen: dict[int, float] = field(default_factory=dict)
    orchestrator: int | None = None  # the pid that wrote RUN_START

    @property
    def alive(self) -> list[int]:
        return sorted(p for p, t in self.last_seen.items() if process_alive(p, t))

    @property
    def dead(self) -> list[int]:
        return sorted(p for p, t in self.last_seen.items() if not process_alive(p, t))


def run_workers(instance: dg.DagsterInstance, run_id: str) -> RunWorkers:
    workers = RunWorkers()
    for entry in instance.all_logs(run_id, of_type=WORKER_EVENT_TYPES):
        ev = entry.dagster_event
        if ev is None or not ev.pid:
            continue
        if ev.event_type == DagsterEventType.ENGINE_EVENT and not ev.step_key:
            data = ev.event_specific_data
            if "pid" not in (getattr(data, "metadata", None) or {}):
                continue
        if ev.event_type == DagsterEventType.RUN_START and workers.orchestrator is None:
            workers.orchestrator = ev.pid
        workers.last_seen[ev.pid] = max(workers.last_seen.get(ev.pid, 0.0), entry.timestamp)
    return workers


def slots_held(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    """Pool slots the run holds now: {pool: count}."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    held: dict[str, int] = {}
    for key in sorted(storage.get_concurrency_keys()):
        n = sum(1 for s in storage.get_concurrency_info(key).claimed_slots if s.run_id == run_id)
        if n:
            held[key] = n
    return held


def run_label(run: dg.DagsterRun, instance: dg.DagsterInstance | None = None) -> str:
    """The assets a run materializes ("base_model"), else its job name."""
    keys = {k.to_user_string() for k in run.asset_selection or ()}
    if not keys and instance is not None:  # e.g. `dg.materialize` or a whole-job run: its planned assets
        planned = instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
        keys = {e.dagster_event.asset_key.to_user_string() for e in planned
                if e.dagster_event is not None and e.dagster_event.asset_key is not None}
    if not keys:
        return run.job_name
    keys = sorted(keys)
    return ", ".join(keys[:3]) + (f" +{len(keys) - 3}" if len(keys) > 3 else "")


def _slots_phrase(held: dict[str, int]) -> str:
    if not held:
        return "it held no pool slot"
    return "freed " + ", ".join(f"{n} {pool} slot{'s' if n != 1 else ''}" for pool, n in held.items())


def _pids_phrase(pids: list[int]) -> str:
    return f"pid {pids[0]}" if len(pids) == 1 else "pids " + ", ".join(map(str, pids))


def free_slots(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    """Free every pool slot (and drop every queued claim) of a run; returns what it held. Dagster then assigns
    the freed slots to the steps waiting for them."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    held = slots_held(instance, run_id)
    storage.free_concurrency_slots_for_run(run_id)
    return held


def reap_dead_runs(
    instance: dg.DagsterInstance, log: Callable[[str], None] = print, dry_run: bool = False
) -> list[str]:
    """Mark failed every STARTING/STARTED/CANCELING run whose worker processes are all dead, and free its pool
    slots; also free slots still held by finished runs whose workers are all gone. Returns the run ids acted on
    (or that would be, with dry_run). Logs one line per run. Never touches a run with a live worker.

    Only for runs launched as processes of this host: a launcher that checks its workers' health itself
    (K8sRunLauncher: run workers and steps in pods) puts other machines' pids in the events, which say nothing
    here, so nothing is reaped; Dagster's run monitoring fails those runs when their pods die."""
    launcher = instance.run_launcher
    if launcher is not None and launcher.supports_check_run_worker_health:
        log(f"not reaping: runs are launched by {type(launcher).__name__}, not as processes of this host; "
            "Dagster's run monitoring watches them")
        return []
    acted: list[str] = []
    for run in instance.get_runs(filters=RunsFilter(statuses=ACTIVE_STATUSES)):
        workers = run_workers(instance, run.run_id)
        if not workers.last_seen:
            continue  # no worker ever reported: nothing to judge by (run monitoring times out STARTING runs)
        alive = workers.alive
        short = run.run_id[:8]
        if alive:
            if workers.orchestrator is not None and workers.orchestrator not in alive:
                log(f"run {short}… ({run_label(run, instance)}): its orchestrator (pid {workers.orchestrator}) "
                    f"is gone but {_pids_phrase(alive)} still runs; left {run.status.value} until that exits")
            continue
        dead = workers.dead
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status != run.status:
            continue  # it moved on while we looked
        held = slots_held(instance, run.run_id)
        verb = "canceled" if run.status == DagsterRunStatus.CANCELING else "failed"
        if dry_run:
            log(f"run {short}… ({run_label(run, instance)}) was left {run.status.value} by a dead process "
                f"({_pids_phrase(dead)}); would mark it {verb} and free "
                + (", ".join(f"{n} {p} slot(s)" for p, n in held.items()) or "no slot"))
            acted.append(run.run_id)
            continue
        message = (f"Every process of this run is gone ({_pids_phrase(dead)}: killed, or died without reporting); "
                   f"marked {verb} by {REAPER_NAME}, which freed its pool slots.")
        if run.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(current, message)
        else:
            instance.report_run_failed(
                current, message, JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION)
            )
        held = free_slots(instance, run.run_id)
        log(f"run {short}… ({run_label(run, instance)}) was left {run.status.value} by a dead process "
            f"({_pids_phrase(dead)}); marked {verb}, {_slots_phrase(held)}")
        acted.append(run.run_id)

    # Runs that ended (marked failed by the code server's orphan check, the UI, a reaper that crashed half-way)
    # but whose slots were never given back. Dagster's monitoring daemon does the same after
    # `free_slots_after_run_end_seconds`, but only under `dagster dev`.
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        for run_id in sorted(storage.get_concurrency_run_ids() - set(acted)):
            run = instance.get_run_by_id(run_id)
            if run is not None and not run.is_finished:
                continue  # active: judged above (queued or not started yet: leave its claims alone)
            if run is not None and run_workers(instance, run_id).alive:
                continue
            held = slots_held(instance, run_id)
            state = f"ended {run.status.value}" if run is not None else "was deleted"
            label = f" ({run_label(run, instance)})" if run is not None else ""
            if dry_run:
                log(f"run {run_id[:8]}…{label} {state} but still holds "
                    + (", ".join(f"{n} {p} slot(s)" for p, n in held.items()) or "a queued slot claim")
                    + "; would free it")
            else:
                free_slots(instance, run_id)
                log(f"run {run_id[:8]}…{label} {state} but still held its pool claims; "
                    + (_slots_phrase(held) if held else "dropped its queued slot claim"))
            acted.append(run_id)
    return acted


def reap_before_launch(instance: dg.DagsterInstance, log: Callable[[str], None] = print) -> list[str]:
    """What `plasma` runs before it launches anything: the reaper, never fatal (a launch that then blocks on a
    slot says so itself)."""
    try:
        return reap_dead_runs(instance, log=log)
    except Exception as e:  # noqa: BLE001 - a broken reaper must not stop the launch
        log(f"warning: could not check for dead runs ({type(e).__name__}: {e})")
        return []


# -------------------------------------------------------------------------------------------------- sensor


def dead_run_sensor(minimum_interval_seconds: int = 30) -> dg.SensorDefinition:
    """The reaper under `dagster dev`: on by default, every ~30 s, so runs of a killed `dagster dev` (or of a
    killed CLI launch into the same instance) are marked failed and stop holding pool slots and run-queue places."""

    @dg.sensor(
        name="reap_dead_runs",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Marks failed the runs whose processes are all dead (kill -9, crash) and frees their pool slots, "
            "so the gpu pool and the run queue do not stay blocked by them."
        ),
    )
    def reap_dead_runs_sensor(context: dg.SensorEvaluationContext):
        lines: list[str] = []

        def log(line: str) -> None:
            lines.append(line)
            context.log.info(line)

        reaped = reap_dead_runs(context.instance, log=log)
        if reaped:
            return dg.SkipReason(f"reaped {len(reaped)} run(s): " + " | ".join(lines))
        return dg.SkipReason("no dead runs" + (": " + " | ".join(lines) if lines else ""))

    return reap_dead_runs_sensor
