"""Trainer process safety: dies with its parent, one trainer per work dir, checkpoints verified on resume,
metrics.jsonl cut back to the checkpoint so a resumed run's records equal an uninterrupted run's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from plasma_pipeline.train import checkpoint as ckpt
from plasma_pipeline.train.checkpoint import list_checkpoints, sha256_file
from plasma_pipeline.train.config import TrainConfig
from plasma_pipeline.train.trainer import train
from plasma_pipeline.train.workdir import (EXIT_LOCKED, WorkDirLocked, holder_pid, is_locked, lock_workdir,
                                           try_lock)

REPO = Path(__file__).resolve().parents[2]
DETERMINISTIC = ("event", "step", "loss", "val_loss", "lr", "grad_norm", "final_loss", "weights_sha256")


# ----------------------------------------------------------------------------- helpers


def records(out_dir: Path) -> list[dict]:
    f = Path(out_dir) / "metrics.jsonl"
    rows = []
    if f.exists():
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line being written right now
    return rows


def deterministic(out_dir: Path) -> list[tuple]:
    """metrics.jsonl without the timing fields (tokens_per_s, step_s, run_seconds, memory, ...)."""
    return [tuple(r.get(k) for k in DETERMINISTIC) for r in records(out_dir)]


def cfg(data, out, **kw) -> TrainConfig:
    base = dict(model="toy", data_dir=str(data), out_dir=str(out), steps=12, batch_size=4, lr=3e-3, warmup=2,
                engine="resident", device="cpu", val_batches=1, keep_last=2, save_every=4, eval_every=3)
    return TrainConfig(**{**base, **kw})


def cli_env() -> dict:
    env = dict(os.environ)
    env.pop("PLASMA_PARENT_PID", None)
    env.pop("DAGSTER_PIPES_CONTEXT", None)
    return env


def write_cli_config(tmp_path: Path, data, out: Path, **kw) -> Path:
    conf = {"model": "toy", "data_dir": str(data), "out_dir": str(out), "steps": 100000, "batch_size": 4,
            "engine": "resident", "device": "cpu", "val_batches": 1, "log_every": 1, **kw}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(conf))
    return path


def start_cli(run_json: Path, log: Path, *sets: str, env: dict | None = None) -> subprocess.Popen:
    """The trainer CLI with stdout+stderr to a file (polled by the test, so no pipe can fill up)."""
    args = [sys.executable, "-m", "plasma_pipeline.train", "--config", str(run_json)]
    for s in sets:
        args += ["--set", s]
    return subprocess.Popen(args, cwd=REPO, env=env or cli_env(), stdout=open(log, "w"), stderr=subprocess.STDOUT)


def wait_for(pred, timeout: float, what: str, poll: float = 0.1):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = pred()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def last_step(out_dir: Path) -> int:
    return max((r["step"] for r in records(out_dir) if "loss" in r), default=0)


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def kill_if_alive(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
        p.wait()


# ----------------------------------------------------------------------------- 1. dies with its parent

PARENT = r"""
import os, subprocess, sys
env = dict(os.environ, PLASMA_PARENT_PID=str(os.getpid()))
p = subprocess.Popen([sys.executable, "-m", "plasma_pipeline.train", "--config", sys.argv[1]], env=env,
                     stdout=subprocess.PIPE, stderr=open(sys.argv[2], "w"))
print(p.pid, flush=True)
for line in p.stdout:  # a launcher reading the trainer's stdout: killing it breaks that pipe too
    pass
p.wait()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_trainer_dies_when_its_parent_is_killed(tmp_path, shards):
    out = tmp_path / "out"
    run_json = write_cli_config(tmp_path, shards, out)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(run_json), str(tmp_path / "trainer.err")],
                              cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, text=True)
    trainer_pid = int(parent.stdout.readline())
    try:
        wait_for(lambda: last_step(out) >= 3, 120, "the trainer to train 3 steps")
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        wait_for(lambda: not alive(trainer_pid), 30, f"trainer pid {trainer_pid} to exit after its parent died")
    finally:
        if alive(trainer_pid):
            os.kill(trainer_pid, signal.SIGKILL)
        kill_if_alive(parent)
    err = (tmp_path / "trainer.err").read_text()
    rows = records(out)
    # It went through the SIGTERM path: checkpoint at the step boundary, "terminated" last, nothing after.
    assert rows[-1]["event"] == "terminated", err
    ck = Path(rows[-1]["checkpoint"])
    assert ck == list_checkpoints(out)[-1][1] and rows[-1]["step"] == last_step(out)
    assert json.loads((ck / "state.json").read_text())["step"] == rows[-1]["step"]
    size = (out / "metrics.jsonl").stat().st_size
    time.sleep(1.0)
    assert (out / "metrics.jsonl").stat().st_size == size  # not still training somewhere
    assert not is_locked(out)


def test_trainer_exits_at_once_if_parent_already_gone(tmp_path, shards):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that is no longer our parent (nor anyone's)
    out = tmp_path / "out"
    run_json = write_cli_config(tmp_path, shards, out)
    r = subprocess.run([sys.executable, "-m", "plasma_pipeline.train", "--config", str(run_json)], cwd=REPO,
                       env={**cli_env(), "PLASMA_PARENT_PID": str(gone.pid)}, capture_output=True, text=True,
                       timeout=60)
    if sys.platform.startswith("linux"):
        assert r.returncode == 143, r.stderr
        assert f"parent process {gone.pid} (PLASMA_PARENT_PID) is gone" in r.stderr
        assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints").exists()


def test_trainer_runs_when_parent_pid_matches(tmp_path, shards):
    """Control for the test above: PLASMA_PARENT_PID naming the real parent does not stop the trainer."""
    out = tmp_path / "out"
    run_json = write_cli_config(tmp_path, shards, out, steps=2, val_batches=0)
    r = subprocess.run([sys.executable, "-m", "plasma_pipeline.train", "--config", str(run_json)], cwd=REPO,
                       env={**cli_env(), "PLASMA_PARENT_PID": str(os.getpid())}, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert records(out)[-1]["event"] == "final"


# ----------------------------------------------------------------------------- 2. one trainer per work dir


def test_workdir_lock_in_process(tmp_path):
    out = tmp_path / "w"
    assert not is_locked(out) and not (out / ".trainer.lock").exists()  # is_locked never creates anything
    lock = lock_workdir(out)
    try:
        assert is_locked(out) and holder_pid(out) == os.getpid()
        assert try_lock(out) is None
        said = []
        t0 = time.monotonic()
        with pytest.raises(WorkDirLocked) as e:
            lock_workdir(out, timeout_s=0.6, log=said.append)
        assert time.monotonic() - t0 >= 0.6
        assert str(out) in str(e.value) and f"pid {os.getpid()}" in str(e.value)
        assert len(said) == 1 and said[0].startswith(f"waiting for the trainer holding {out / '.trainer.lock'} "
                                                     f"(pid {os.getpid()})")
    finally:
        lock.release()
    assert not is_locked(out)
    with try_lock(out) as again:
        assert again.held and is_locked(out)
    assert not is_locked(out)


def test_workdir_lock_dies_with_kill9(tmp_path):
    out = tmp_path / "w"
    code = ("import sys, time\nfrom plasma_pipeline.train.workdir import lock_workdir\n"
            "lock_workdir(sys.argv[1]); print('locked', flush=True); time.sleep(600)")
    p = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        assert is_locked(out) and holder_pid(out) == p.pid
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert not is_locked(out)  # no stale lock: the kernel dropped it with the process
        with lock_workdir(out, timeout_s=0):
            pass
    finally:
        kill_if_alive(p)


def test_two_trainers_never_share_a_work_dir(tmp_path, shards):
    out = tmp_path / "out"
    run_json = write_cli_config(tmp_path, shards, out)
    a = start_cli(run_json, tmp_path / "a.log")
    procs = [a]
    try:
        wait_for(lambda: last_step(out) >= 2, 120, "trainer A to train")
        # B: short timeout -> clear error naming the work dir and A's pid; never trained.
        b = start_cli(run_json, tmp_path / "b.log", "lock_timeout_s=1")
        procs.append(b)
        # C: waits for A, which then gets SIGTERM, writes its checkpoint and exits; C resumes from it.
        c = start_cli(run_json, tmp_path / "c.log", "lock_timeout_s=120")
        procs.append(c)
        assert b.wait(timeout=120) == EXIT_LOCKED
        b_log = (tmp_path / "b.log").read_text()
        assert f"work dir {out} is in use by another trainer (pid {a.pid}" in b_log, b_log
        wait_for(lambda: "waiting for the trainer holding" in (tmp_path / "c.log").read_text(), 120,
                 "trainer C to wait for the lock")
        c_log = (tmp_path / "c.log").read_text()
        assert f"waiting for the trainer holding {out / '.trainer.lock'} (pid {a.pid})" in c_log
        steps_before = last_step(out)
        wait_for(lambda: last_step(out) > steps_before, 60, "A to keep training while C waits")
        assert a.poll() is None and c.poll() is None
        a.send_signal(signal.SIGTERM)
        assert a.wait(timeout=60) == 143
        a_stop = json.loads((list_checkpoints(out)[-1][1] / "state.json").read_text())["step"]
        wait_for(lambda: last_step(out) >= a_stop + 2, 120, "trainer C to resume after A")
        assert f"resuming from {out / 'checkpoints' / f'step-{a_stop:06d}'}" in (tmp_path / "c.log").read_text()
        c.send_signal(signal.SIGTERM)
        assert c.wait(timeout=60) == 143
    finally:
        for p in procs:
            kill_if_alive(p)
    rows = records(out)
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, len(steps) + 1))  # one trainer at a time, C continued where A stopped
    assert [r.get("event") for r in rows if "event" in r] == ["terminated"]  # A's was cut back on C's resume
    assert (tmp_path / "c.log").read_text().count("waiting for the trainer holding") == 1


# ----------------------------------------------------------------------------- 3-5. checkpoints and metrics


@pytest.fixture(scope="module")
def straight(tmp_path_factory, shards):
    out = tmp_path_factory.mktemp("straight")
    summary = train(cfg(shards, out))
    return out, summary


def test_checkpoint_records_its_hashes(straight):
    out, _ = straight
    for _, path in list_checkpoints(out):
        files = json.loads((path / "state.json").read_text())["files"]
        assert sorted(files) == ["config.json", "model.safetensors", "optimizer.safetensors"]
        for name, rec in files.items():
            assert rec == {"bytes": (path / name).stat().st_size, "sha256": sha256_file(path / name)}


def _truncate(f: Path):
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 3])
    return f"{f} is truncated ({len(data) // 3} of {len(data)} bytes)"


def _flip(f: Path):
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01  # inside the tensor data: safetensors would load this without complaint
    f.write_bytes(bytes(data))
    from safetensors.torch import load_file

    load_file(str(f))
    return f"{f} is corrupt (sha256 "


def _legacy_truncate(f: Path):
    """A checkpoint written before hashes were recorded: only loading it shows it is bad."""
    for _, path in list_checkpoints(f.parents[2]):
        st = json.loads((path / "state.json").read_text())
        st.pop("files")
        (path / "state.json").write_text(json.dumps(st))
    f.write_bytes(f.read_bytes()[:100])
    return f"{f.parent} cannot be loaded ("


@pytest.mark.parametrize("damage", [_truncate, _flip, _legacy_truncate], ids=["truncated", "bitflip", "legacy"])
def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, shards, straight, capsys, damage):
    out = tmp_path / "run"
    train(cfg(shards, out, halt_at_step=8))
    assert [s for s, _ in list_checkpoints(out)] == [4, 8]
    bad = out / "checkpoints" / "step-000008"
    expect = damage(bad / "model.safetensors")
    capsys.readouterr()
    summary = train(cfg(shards, out))
    err = capsys.readouterr().err
    assert f"checkpoint {expect}" in err, err
    assert "ignoring it; moved to .corrupt-step-000008, trying the previous one" in err
    assert f"resuming from {out / 'checkpoints' / 'step-000004'}" in err
    assert summary["resumed_from_step"] == 4 and summary["steps_this_run"] == 8 and summary["step"] == 12
    straight_out, straight_summary = straight
    assert summary["weights_sha256"] == straight_summary["weights_sha256"]
    assert sha256_file(out / "final/model.safetensors") == sha256_file(straight_out / "final/model.safetensors")
    assert deterministic(out) == deterministic(straight_out)
    # the corrupt one was kept aside until the rerun saved step 8 again, then pruned
    assert [s for s, _ in list_checkpoints(out)] == [8, 12]
    assert not list((out / "checkpoints").glob(".corrupt-*"))


def test_no_intact_checkpoint_starts_from_scratch(tmp_path, shards, straight, capsys):
    out = tmp_path / "run"
    train(cfg(shards, out, halt_at_step=4))
    _truncate(out / "checkpoints" / "step-000004" / "optimizer.safetensors")
    capsys.readouterr()
    summary = train(cfg(shards, out))
    err = capsys.readouterr().err
    assert f"{out / 'checkpoints' / 'step-000004' / 'optimizer.safetensors'} is truncated" in err
    assert "no older checkpoint left" in err and "starting from scratch" in err
    assert summary["resumed_from_step"] is None and summary["steps_this_run"] == 12
    assert deterministic(out) == deterministic(straight[0])


def _save_tiny(out: Path, step: int, keep_last: int = 10) -> Path:
    w = {"w": torch.full((64,), float(step))}
    return ckpt.save_checkpoint(out, step, w, {"m": torch.zeros(64)}, {"step": step}, {"name": "t"}, keep_last)


def test_prune_never_drops_the_last_intact_for_a_corrupt_newer(tmp_path, capsys):
    out = tmp_path / "run"
    _save_tiny(out, 2)
    _truncate(_save_tiny(out, 4) / "model.safetensors")
    ckpt.prune_checkpoints(out, keep_last=1)  # default: counts back from the newest that passes a size check
    assert [s for s, _ in list_checkpoints(out)] == [2, 4]
    _save_tiny(out, 3, keep_last=1)  # the newer corrupt one is not what keep_last keeps
    assert [s for s, _ in list_checkpoints(out)] == [3, 4]
    path, weights, _, state = ckpt.load_latest_intact(out, report=print)
    assert path.name == "step-000003" and state["step"] == 3 and weights["w"][0] == 3
    assert "step-000004/model.safetensors is truncated" in capsys.readouterr().out
    assert (out / "checkpoints" / ".corrupt-step-000004").is_dir()  # kept aside, not deleted
    _save_tiny(out, 3, keep_last=1)
    assert (out / "checkpoints" / ".corrupt-step-000004").is_dir()  # nothing newer than it saved yet
    _save_tiny(out, 4, keep_last=1)
    assert not (out / "checkpoints" / ".corrupt-step-000004").exists()
    assert [s for s, _ in list_checkpoints(out)] == [4]


def _halt_then_resume(shards, out):
    halted = train(cfg(shards, out, halt_at_step=6))
    assert halted["halted"] and records(out)[-1]["event"] == "halted"


def _killed_after_checkpoint(shards, out):
    """Killed at step 10 before its checkpoint landed, with a torn last line: records 9, 10 must go."""
    train(cfg(shards, out, halt_at_step=10))
    shutil.rmtree(out / "checkpoints" / "step-000010")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "loss": 1.')


def _stale_metrics_no_checkpoint(shards, out):
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"event": "terminated", "step": 1}\n')


@pytest.mark.parametrize("interrupt", [_halt_then_resume, _killed_after_checkpoint, _stale_metrics_no_checkpoint],
                         ids=["halted", "killed", "fresh"])
def test_resumed_metrics_equal_uninterrupted(tmp_path, shards, straight, interrupt):
    out = tmp_path / "run"
    interrupt(shards, out)
    summary = train(cfg(shards, out))
    straight_out, straight_summary = straight
    a, b = deterministic(straight_out), deterministic(out)
    assert [r[1] for r in a if r[0] is None and r[2] is not None] == list(range(1, 13))
    assert sum(1 for r in a if r[3] is not None) == 4  # val_loss at 3, 6, 9 and on the final record
    assert a == b
    assert summary["weights_sha256"] == straight_summary["weights_sha256"]
    assert sha256_file(out / "final/model.safetensors") == sha256_file(straight_out / "final/model.safetensors")
