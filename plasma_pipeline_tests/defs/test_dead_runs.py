"""Runs whose processes were killed with SIGKILL: found from Dagster's own events, marked failed, slots freed.

Everything here uses real processes and a real `kill -9` against a Dagster instance built from the project's
dagster.yaml. The fast tests use a one-asset code location in the "gpu" pool that only sleeps; the slow one kills
`dagster asset materialize --select base_model` while the trainer is training and checks that
`plasma materialize --select base_model` then trains at once instead of blocking on the gpu slot.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from plasma_pipeline.defs.runs import process_alive, reap_dead_runs, slots_held
from plasma_pipeline.recipe import REPO_ROOT
from plasma_pipeline_tests.conftest import project_instance

BIN = Path(sys.executable).parent

HOG = '''
import os, time
from pathlib import Path
import dagster as dg

@dg.asset(pool="gpu")
def hog(context):
    Path(os.environ["HOG_READY"]).write_text(str(os.getpid()))
    time.sleep(600)

defs = dg.Definitions(assets=[hog])
'''

# The same asset, executed in-process the way `plasma materialize` runs its job.
HOG_IN_PROCESS = HOG + '''
dg.materialize([hog], instance=dg.DagsterInstance.get())
'''


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the process and every descendant: its session's process group (start_new_session=True) and, for
    any that left the group, the /proc parent walk collected before the first kill."""
    pids = [proc.pid, *_descendants(proc.pid)]
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def _wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    pytest.fail(f"timed out waiting for {what}\n{tail}")


def _only_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    runs = instance.get_runs()
    assert len(runs) == 1, [r.run_id for r in runs]
    return runs[0]


@pytest.fixture
def hog_instance(tmp_path):
    project = project_instance(tmp_path)
    (tmp_path / "hog.py").write_text(HOG)
    ready = tmp_path / "ready"
    env = {**project["env"], "HOG_READY": str(ready)}
    procs: list[subprocess.Popen] = []
    yield {**project, "env": env, "ready": ready, "dir": tmp_path, "procs": procs}
    for p in procs:
        if p.poll() is None:
            _kill_tree(p)


def _instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


def test_process_alive_sees_a_reused_pid_and_a_zombie_as_dead():
    before = time.time()
    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert process_alive(proc.pid, time.time())
        # The pid's current process started after the last event "its" worker wrote an hour ago: reused.
        assert not process_alive(proc.pid, before - 3600)
        os.kill(proc.pid, signal.SIGKILL)
        _wait_for(lambda: not process_alive(proc.pid, time.time()), 10, "the killed process to read as dead")
        assert (Path(f"/proc/{proc.pid}").exists()), "expected a zombie (killed, not yet waited for)"
    finally:
        proc.kill()
        proc.wait()
    assert not process_alive(proc.pid, time.time())


def test_a_live_multiprocess_run_is_left_alone_until_every_process_of_it_is_dead(hog_instance):
    """`dagster asset materialize` (multiprocess executor): the orchestrator killed alone leaves the step process
    running on its gpu slot, so the run stays; once the step process is killed too, the run is reaped."""
    p = hog_instance
    log = p["dir"] / "cli.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "dagster"), "asset", "materialize", "-f", str(p["dir"] / "hog.py"), "--select", "hog"],
            env=p["env"], cwd=p["dir"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    p["procs"].append(proc)
    _wait_for(lambda: p["ready"].exists() and p["ready"].read_text(), 120, "the hog step to start", proc, log)
    step_pid = int(p["ready"].read_text())
    instance = _instance(p["home"])
    run = _only_run(instance)
    assert slots_held(instance, run.run_id) == {"gpu": 1}

    lines: list[str] = []
    assert reap_dead_runs(instance, log=lines.append) == []
    assert lines == []
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED

    os.kill(proc.pid, signal.SIGKILL)  # the orchestrator only
    proc.wait(timeout=30)
    assert process_alive(step_pid)
    assert reap_dead_runs(instance, log=lines.append) == []
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    assert slots_held(instance, run.run_id) == {"gpu": 1}
    assert len(lines) == 1 and f"pid {step_pid} still runs" in lines[0], lines

    os.kill(step_pid, signal.SIGKILL)
    _wait_for(lambda: not process_alive(step_pid), 10, "the step process to die")
    lines.clear()
    assert reap_dead_runs(instance, log=lines.append) == [run.run_id]
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"run {run.run_id[:8]}… (hog) was left STARTED by a dead process (pids {proc.pid}, {step_pid})"), lines
    assert lines[0].endswith("marked failed, freed 1 gpu slot")
    after = instance.get_run_by_id(run.run_id)
    assert after.status == dg.DagsterRunStatus.FAILURE
    gpu = instance.event_log_storage.get_concurrency_info("gpu")
    assert gpu.claimed_slots == [] and gpu.pending_steps == []
    failure = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert len(failure) == 1 and "dead-run reaper" in failure[0].message
    # Nothing left to do: a second pass (another plasma, the sensor) changes nothing.
    assert reap_dead_runs(instance, log=lines.append) == []


def test_a_killed_in_process_run_is_reaped_by_plasma_runs_reap(hog_instance):
    """The `plasma materialize` shape (one process, in-process executor), killed with SIGKILL; then a run that
    something marked failed without giving its slot back (as Dagster's code server does for a dead run worker)."""
    p = hog_instance
    (p["dir"] / "hog_in_process.py").write_text(HOG_IN_PROCESS)
    log = p["dir"] / "in_process.log"

    def start() -> subprocess.Popen:
        p["ready"].unlink(missing_ok=True)
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, str(p["dir"] / "hog_in_process.py")], env=p["env"],
                                    cwd=p["dir"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        p["procs"].append(proc)
        _wait_for(lambda: p["ready"].exists() and p["ready"].read_text(), 120, "the hog step to start", proc, log)
        assert int(p["ready"].read_text()) == proc.pid  # in-process: the step runs in the orchestrator
        return proc

    def plasma_reap() -> str:
        out = subprocess.run([str(BIN / "plasma"), "runs", "reap"], env=p["env"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr[-3000:]
        return out.stdout

    proc = start()
    instance = _instance(p["home"])
    run = _only_run(instance)
    assert "no dead runs" in plasma_reap()  # alive: left alone
    _kill_tree(proc)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    out = plasma_reap()
    assert (f"run {run.run_id[:8]}… (hog) was left STARTED by a dead process (pid {proc.pid}); "
            "marked failed, freed 1 gpu slot") in out, out
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []

    proc2 = start()
    run2 = next(r for r in instance.get_runs() if r.run_id != run.run_id)
    _kill_tree(proc2)
    instance.report_run_failed(run2, "run worker crashed")  # what the code server's orphan check does
    assert slots_held(instance, run2.run_id) == {"gpu": 1}  # marking failed does not give the slot back
    out = plasma_reap()
    assert f"run {run2.run_id[:8]}… (hog) ended FAILURE but still held its pool claims; freed 1 gpu slot" in out, out
    assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []


def test_the_project_defines_the_reaper_sensor_running_by_default(tmp_path, offline_sources):
    from plasma_pipeline.defs import build_defs
    from plasma_pipeline.recipe import load_recipe

    project = project_instance(tmp_path)
    sensor = build_defs(load_recipe(project["recipe"])).resolve_sensor_def("reap_dead_runs")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds <= 30
    with dg.instance_for_test() as instance:
        result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert result.skip_message == "no dead runs"


# ------------------------------------------------------------------------------------------- end to end


def _trainer_pids(store: Path) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"plasma_pipeline.train" in cmd and str(store).encode() in cmd:
                pids.append(int(d.name))
    return pids


def _metrics_dirs(store: Path) -> set[Path]:
    work = store / "base_model" / "work"
    return {m.parent for m in work.glob("*/metrics.jsonl")} if work.exists() else set()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, offline_sources):
    """Everything upstream of base_model materialized once with the Dagster CLI (`*pretrain_shards`: a `+` prefix
    would select only one level of parents)."""
    project = project_instance(tmp_path_factory.mktemp("dead_runs"))
    t0 = time.time()
    proc = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "plasma_pipeline.definitions",
         "--select", "*pretrain_shards"],
        env=project["env"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    print(f"upstream of base_model materialized in {time.time() - t0:.0f} s")
    return project


@pytest.mark.slow
def test_after_kill_9_during_base_model_plasma_materialize_trains_at_once(upstream):
    store, recipe = upstream["store"], upstream["recipe"]
    small = recipe.read_text()
    raw = yaml.safe_load(small)
    raw["pretrain"].update(steps=100_000, save_every=1_000, log_every=1)
    recipe.write_text(yaml.safe_dump(raw))
    log = recipe.parent / "killed_run.log"
    try:
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [str(BIN / "dagster"), "asset", "materialize", "-m", "plasma_pipeline.definitions",
                 "--select", "base_model"],
                env=upstream["env"], cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            killed_dir = next(iter(_wait_for(lambda: _metrics_dirs(store), 300, "the trainer's metrics.jsonl",
                                             proc, log)))
        except BaseException:
            _kill_tree(proc)
            raise
        _kill_tree(proc)
    finally:
        recipe.write_text(small)
    _wait_for(lambda: not _trainer_pids(store), 15, "the killed trainer to be gone")

    instance = _instance(upstream["home"])
    dead = next(r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.STARTED)
    assert dead.asset_selection == {dg.AssetKey("base_model")}
    # The bug: nothing else will ever give this slot back.
    assert slots_held(instance, dead.run_id) == {"gpu": 1}

    out_log = recipe.parent / "rerun.log"
    t0 = time.time()
    with open(out_log, "w") as out:
        rerun = subprocess.Popen([str(BIN / "plasma"), "materialize", "--select", "base_model"], env=upstream["env"],
                                 cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        new_dir = _wait_for(lambda: _metrics_dirs(store) - {killed_dir}, 60, "the rerun to start training",
                            rerun, out_log)
        started = time.time() - t0
        rc = rerun.wait(timeout=600)
    finally:
        if rerun.poll() is None:
            _kill_tree(rerun)
    total = time.time() - t0
    text = out_log.read_text()
    print(f"rerun trained after {started:.1f} s, finished after {total:.1f} s; new work dir {sorted(new_dir)}")
    assert rc == 0 and "success" in text, text[-6000:]
    assert (f"run {dead.run_id[:8]}… (base_model) was left STARTED by a dead process" in text
            and "marked failed, freed 1 gpu slot" in text), text[:4000]
    assert "Step blocked by limit for pool gpu" not in text

    instance = _instance(upstream["home"])
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert slots_held(instance, dead.run_id) == {}
    assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []
    latest = instance.get_runs(limit=1)[0]
    assert latest.run_id != dead.run_id and latest.status == dg.DagsterRunStatus.SUCCESS
