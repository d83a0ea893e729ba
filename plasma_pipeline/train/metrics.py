"""Metrics: throughput, MFU, memory; written to metrics.jsonl and stdout, or to Dagster Pipes when launched by it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

# Dense bf16 peak FLOP/s by device-name substring (datasheet, no sparsity). CPU: no entry, MFU null.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12,
                   "L40S": 362e12, "L4": 121e12, "A10G": 70e12, "4090": 165e12}


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    if device.type != "cuda" or dtype != torch.bfloat16:
        return None
    name = torch.cuda.get_device_name(device)
    for key, val in PEAK_BF16_FLOPS.items():
        if key in name:
            return val
    return None


def host_memory_bytes() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process from /proc; (0, 0) where /proc is absent."""
    cur = peak = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    except OSError:
        pass
    return cur, peak


def gpu_peak_bytes(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


INTERRUPTION_EVENTS = ("terminated", "halted")
"""Events that end a run early; a resume continues the run, so they are dropped from metrics.jsonl."""


def cut_metrics(path: str | Path, step: int | None) -> None:
    """Rewrite metrics.jsonl atomically (temp + os.replace) for a run continuing from checkpoint `step`.

    Keeps records with "step" <= step, minus the events of the interrupted run (terminated, halted) and minus
    "final" (a resumed run writes its own), and drops torn lines (a kill mid-write). step None (a fresh start):
    empties it. The result reads as if the run had never been interrupted: the resumed run appends the rest."""
    path = Path(path)
    if not path.exists():
        return
    keep: list[str] = []
    if step is not None:
        for line in path.read_text(errors="replace").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(r, dict) or not isinstance(r.get("step"), int) or r["step"] > step:
                continue
            if r.get("event") in INTERRUPTION_EVENTS or r.get("event") == "final":
                continue
            keep.append(line + "\n")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.writelines(keep)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _quiet(stream) -> None:
    """The stream's reader is gone (e.g. the launching parent was killed -9): point its fd at /dev/null, so
    neither later prints nor the flush at exit raise BrokenPipeError, and the SIGTERM checkpoint still happens."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _say(text: str, stream) -> None:
    try:
        print(text, file=stream, flush=True)
    except (BrokenPipeError, OSError, ValueError):
        _quiet(stream)


class Reporter:
    """JSON lines to out_dir/metrics.jsonl; to stdout, or to Dagster Pipes if this process runs under it.

    metrics.jsonl is opened (for append) at the first record, so the trainer can cut it back to the checkpoint
    it resumes from (cut_back) once it holds the work dir lock."""

    def __init__(self, out_dir: str | Path, echo: bool = True):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = None
        self.echo = echo
        self.pipes = None
        self._pipes_cm = None
        if os.environ.get("DAGSTER_PIPES_CONTEXT"):  # set by the orchestrator's Pipes client
            try:
                from dagster_pipes import open_dagster_pipes
            except ImportError:
                open_dagster_pipes = None
            if open_dagster_pipes is not None:
                self._pipes_cm = open_dagster_pipes()
                self.pipes = self._pipes_cm.__enter__()

    def cut_back(self, step: int | None) -> None:
        """See cut_metrics: keep what the run logged up to checkpoint `step` (None: nothing)."""
        if self.file is not None:
            self.file.close()
            self.file = None
        cut_metrics(self.path, step)

    total_steps: int | None = None  # set by the trainer: progress lines show step/total and an ETA
    _clock: tuple[float, int] | None = None  # (time, step) of the first step record this launch

    def progress_line(self, record: dict) -> str:
        """One readable line for the run log: step/total, loss, tokens/s, ETA (the full record is in metrics.jsonl)."""
        import time

        step, total = record.get("step"), self.total_steps
        where = f"step {step}/{total}" if total else f"step {step}"
        if "event" in record:
            parts = [f"{record['event']} at {where}"]
            if record.get("final_loss") is not None:
                parts.append(f"loss {record['final_loss']:.4f}")
            if record.get("val_loss") is not None:
                parts.append(f"val loss {record['val_loss']:.4f}")
            if record.get("run_seconds") is not None:
                parts.append(f"{record['run_seconds']:.0f} s")
            if record.get("checkpoint"):
                parts.append(f"checkpoint {record['checkpoint']}")
            return " · ".join(parts)
        if "loss" not in record:  # a val record: overall and per domain
            dom = ", ".join(f"{k.split('/', 1)[1]} {v:.3f}" for k, v in record.items()
                            if k.startswith("val_loss/") and isinstance(v, (int, float)))
            val = record.get("val_loss")
            return f"{where} · val loss {'–' if val is None else f'{val:.4f}'}" + (f" ({dom})" if dom else "")
        now = time.monotonic()
        if self._clock is None:
            self._clock = (now - float(record.get("step_s") or 0.0), int(step) - 1)
        line = f"{where}" + (f" ({step / total:.0%})" if total else "")
        line += f" · loss {record['loss']:.4f} · {record.get('tokens_per_s', 0):,.0f} tokens/s"
        t0, s0 = self._clock
        if total and step > s0:
            eta = (now - t0) / (step - s0) * (total - step)
            line += f" · ETA {int(eta // 60)}m{int(eta % 60):02d}s"
        return line

    def log(self, record: dict) -> None:
        line = json.dumps(record)
        if self.file is None:
            self.file = open(self.path, "a")
        self.file.write(line + "\n")
        self.file.flush()
        if self.pipes is not None:
            # The run log gets a readable line; the record itself is in metrics.jsonl and the custom message.
            self.pipes.log.info(self.progress_line(record))
            self.pipes.report_custom_message(record)
        elif self.echo:
            _say(line, sys.stdout)

    def info(self, msg: str) -> None:
        if self.pipes is not None:
            self.pipes.log.info(msg)
        elif self.echo:
            _say(msg, sys.stderr)

    def final(self, summary: dict) -> None:
        """The run's summary: a last stdout line (TRAIN_SUMMARY {...}) and, under Pipes, a materialization."""
        if self.pipes is None:  # under Pipes the summary is the materialization (and the last metrics.jsonl line)
            _say("TRAIN_SUMMARY " + json.dumps(summary), sys.stdout)
        if self.pipes is not None:
            meta = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) and v is not None}
            try:
                self.pipes.report_asset_materialization(metadata=meta, data_version=summary.get("weights_sha256"))
            except Exception as e:  # a materialization the orchestrator did not expect must not lose the run
                self.pipes.log.warning(f"could not report materialization: {e}")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self._pipes_cm is not None:  # inside a finally: an exception in flight is reported to Dagster
            self._pipes_cm.__exit__(*sys.exc_info())
            self._pipes_cm = None


class NullReporter:
    """A data-parallel rank other than 0: it reports nothing (rank 0 reports for the run)."""

    total_steps: int | None = None

    def cut_back(self, step: int | None) -> None:
        pass

    def log(self, record: dict) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def final(self, summary: dict) -> None:
        pass

    def close(self) -> None:
        pass


def step_record(step: int, stats, lr: float, tokens: int, n_params: int, device, dtype) -> dict:
    tps = tokens / stats.wall_s if stats.wall_s > 0 else 0.0
    tflops = 6 * n_params * tps / 1e12
    peak = peak_flops(device, dtype)
    rss, _ = host_memory_bytes()
    gpu = gpu_peak_bytes(device)
    rec = {
        "step": step, "loss": stats.loss, "lr": lr, "grad_norm": stats.grad_norm,
        "tokens_per_s": round(tps, 1), "model_tflops": round(tflops, 3),
        "mfu": None if peak is None else round(tflops * 1e12 / peak, 4),
        "step_s": round(stats.wall_s, 4), "compute_s": round(stats.compute_s, 4),
        "h2d_s": round(stats.h2d_s, 4), "d2h_s": round(stats.d2h_s, 4),
        "cpu_adam_s": round(stats.cpu_adam_s, 4), "adam_wait_s": round(stats.adam_wait_s, 4),
        "idle_s": round(stats.idle_s, 4),
        "overlap": None if stats.overlap is None or device.type != "cuda" else round(stats.overlap, 4),
        "streamed_gb": round(stats.streamed_bytes / 1e9, 3),
        "gpu_peak_gb": None if gpu is None else round(gpu / 2**30, 3), "host_rss_gb": round(rss / 2**30, 3),
    }
    return rec
