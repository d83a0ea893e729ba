"""The training loop: build an engine, resume if out_dir has checkpoints, train, checkpoint, finalise."""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from pathlib import Path

import torch

from plasma_pipeline.train import checkpoint as ckpt
from plasma_pipeline.train.config import ModelConfig, TrainConfig
from plasma_pipeline.train.data import TokenLoader, row_length, val_batches
from plasma_pipeline.train import distributed
from plasma_pipeline.train.metrics import NullReporter, Reporter, gpu_peak_bytes, host_memory_bytes, peak_flops, step_record
from plasma_pipeline.train.optim import lr_at
from plasma_pipeline.train.workdir import lock_workdir

EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(SystemExit):
    """Raised after SIGTERM once the checkpoint at the current step boundary is on disk."""

    def __init__(self):
        super().__init__(EXIT_TERMINATED)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}[name]


def build_engine(cfg: TrainConfig, mcfg: ModelConfig, device, dtype, weights=None, seq_len: int | None = None):
    if cfg.engine == "resident":
        from plasma_pipeline.train.resident import ResidentEngine

        return ResidentEngine(mcfg, cfg, device, dtype, weights)
    from plasma_pipeline.train.streaming import StreamingEngine

    return StreamingEngine(mcfg, cfg, device, dtype, weights, seq_len=seq_len)


def plan_streaming(cfg: TrainConfig, mcfg: ModelConfig, device, dtype, seq_len: int):
    """The streaming engine's memory plan for this run, without building anything (PlanError if it cannot fit)."""
    from plasma_pipeline.train.plan import plan_for

    return plan_for(mcfg, cfg, device, dtype, seq_len)


class _SigtermFlag:
    """Turns SIGTERM and SIGINT into a flag the loop checks at step boundaries (main thread only).

    SIGINT matters because Dagster Pipes forwards a run terminated from the UI as SIGINT to the trainer."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.set = False
        self.prev: dict = {}

    def __enter__(self):
        try:
            for sig in self.SIGNALS:
                self.prev[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self.prev = {}
        return self

    def _handle(self, signum, frame):
        self.set = True

    def __exit__(self, *exc):
        for sig, prev in self.prev.items():
            signal.signal(sig, prev)


def evaluate(engine, batches, dp: distributed.DataParallel | None = None) -> dict | None:
    """{"val_loss": mean over every sampled row, "val_loss/<domain>": mean per domain, "val_rows": rows scored};
    None without val data. Under data parallel each rank scores every world-th batch and the per-domain sums are
    added over ranks: every rank gets the single-process numbers for 1/N of the work (and val_rows counts each
    sampled row once, not once per rank)."""
    if not batches:
        return None
    domains = sorted({b.domain for b in batches})
    sums = torch.zeros(len(domains), 2, dtype=torch.float64)  # (loss x rows, rows) per domain
    mine = batches if dp is None or not dp.enabled else batches[dp.rank::dp.world]
    for b in mine:
        i = domains.index(b.domain)
        sums[i, 0] += engine.eval_loss(b) * b.inputs.shape[0]
        sums[i, 1] += b.inputs.shape[0]
    if dp is not None and dp.enabled:
        sums = dp.sum(sums)
    out = {"val_loss": float(sums[:, 0].sum() / sums[:, 1].sum()), "val_rows": int(sums[:, 1].sum())}
    if domains != [""]:
        for i, d in enumerate(domains):
            out[f"val_loss/{d}"] = float(sums[i, 0] / sums[i, 1])
    return out


def train(cfg: TrainConfig, reporter: Reporter | None = None) -> dict:
    """Run (or resume) cfg; returns the summary dict. Raises Terminated after a SIGTERM checkpoint.

    Holds out_dir/.trainer.lock throughout (WorkDirLocked if another trainer keeps it past cfg.lock_timeout_s).
    Resumes from the newest intact checkpoint (bad ones are reported and moved aside) and cuts metrics.jsonl back
    to that step, so an interrupted-then-resumed run leaves the records of an uninterrupted one.

    Under torchrun (WORLD_SIZE > 1) the ranks train data parallel (distributed.py): rank 0 alone holds the lock,
    picks the checkpoint, logs, and writes checkpoints and final/; the others wait for it at barriers."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mcfg = cfg.model_config()
    seq_len = row_length(cfg.data_dir) - 1
    if seq_len > mcfg.max_seq_len:
        raise ValueError(f"shards hold {seq_len}-token sequences; model max_seq_len is {mcfg.max_seq_len}")
    dp = distributed.setup(cfg.device)
    # Engines see this rank's share of the batch (the streaming plan sizes activations by it).
    ecfg = dataclasses.replace(cfg, batch_size=dp.local_batch_size(cfg.batch_size)) if dp.enabled else cfg
    device = dp.device(resolve_device(cfg.device))
    dtype = resolve_dtype(cfg.dtype, device)
    torch.manual_seed(cfg.seed)
    own_reporter = reporter is None
    if not dp.is_main:  # logs and metrics come from rank 0 only
        reporter = NullReporter()
    reporter = reporter or Reporter(out)
    lock = engine = None
    try:
        if cfg.engine == "streaming":  # before the lock, the checkpoint read and any allocation: fail fast
            reporter.info(plan_streaming(ecfg, mcfg, device, dtype, seq_len).summary())
        # One trainer per work dir; waits for one that got SIGTERM and is still writing its last checkpoint.
        if dp.is_main:
            lock = lock_workdir(out, cfg.lock_timeout_s, log=reporter.info)
        weights = optim = state = None
        resumed_from = None
        had_checkpoints = bool(ckpt.list_checkpoints(out))
        if dp.is_main:
            found = ckpt.load_latest_intact(out, reporter.info)  # bad ones are reported and moved aside
            dp.broadcast(None if found is None else str(found[0]))
        else:  # the checkpoint rank 0 verified (and found no fault in)
            chosen = dp.broadcast(None)
            found = None if chosen is None else (Path(chosen), *ckpt.load_checkpoint(chosen))
        if found is not None:  # resume: weights, optimizer, data position and RNG from the newest intact checkpoint
            latest, weights, optim, state = found
            resumed_from = int(state["step"])
            reporter.info(f"resuming from {latest}")
        elif had_checkpoints:
            reporter.info(f"warning: no intact checkpoint in {out / 'checkpoints'}; starting "
                          + (f"from {cfg.init_from}" if cfg.init_from else "from scratch"))
        if found is None and cfg.init_from:  # fresh run from given weights (SFT): new optimizer, step 0
            weights = ckpt.load_weights(cfg.init_from)
            reporter.info(f"initialising from {cfg.init_from}")
        reporter.cut_back(resumed_from)  # metrics.jsonl as it was at that checkpoint (empty on a fresh start)
        engine = build_engine(ecfg, mcfg, device, dtype, weights, seq_len=seq_len)
        if optim is not None:
            engine.load(weights, optim)
        del weights, optim
        return _run(cfg, mcfg, engine, state, reporter, device, dtype, seq_len, resumed_from, dp)
    finally:
        if engine is not None:
            engine.close()
        if own_reporter:
            reporter.close()
        if lock is not None:
            lock.release()
        dp.close()


def _run(cfg: TrainConfig, mcfg: ModelConfig, engine, state: dict | None, reporter: Reporter, device, dtype,
         seq_len: int, resumed_from: int | None, dp: distributed.DataParallel | None = None) -> dict:
    dp = dp or distributed.DataParallel()
    out = Path(cfg.out_dir)
    loader = TokenLoader(cfg.data_dir, cfg.batch_size, cfg.seed)
    if state is not None:
        loader.load_state_dict(state["data"])
        ckpt.set_rng_state(state["rng"])
    vals = val_batches(cfg.data_dir, cfg.batch_size, cfg.val_batches)
    n_params = mcfg.num_params()
    tokens_per_step = cfg.batch_size * seq_len
    reporter.total_steps = cfg.steps

    in_flight: list = []  # the background save still being written (at most one)

    def save(step: int, background: bool = False) -> Path | None:
        """Rank 0 writes; under data parallel the other ranks wait until a foreground save is on disk."""
        if not dp.is_main:
            if not background:
                dp.barrier()
            return None
        path = _save(step, background)
        if not background:
            dp.barrier()
        return path

    def drain(wait: bool) -> None:
        """Log a background save that has finished (its time, size of copies, waits), or wait for it first."""
        while in_flight and (wait or in_flight[0].done()):
            h = in_flight.pop(0)
            path = h.result()
            reporter.log({"event": "checkpoint", "step": h.step, "checkpoint": str(path), "background": True,
                          **h.stats})

    def _save(step: int, background: bool) -> Path | None:
        drain(wait=True)  # one save at a time; a foreground save follows any background one
        st = {"step": step, "data": loader.state_dict(), "rng": ckpt.rng_state(), "config": cfg.to_dict()}
        if background and getattr(engine, "can_snapshot", False):
            in_flight.append(ckpt.save_checkpoint_async(out, step, engine, st, mcfg.to_dict(), cfg.keep_last))
            return None
        return ckpt.save_checkpoint(out, step, engine.state_dict(), engine.optimizer_state_dict(), st,
                                    mcfg.to_dict(), cfg.keep_last)

    t_run = time.perf_counter()
    steps_this_run, last = 0, None
    with _SigtermFlag() as term:
        while engine.step < cfg.steps:
            if dp.any(term.set):  # every rank stops at the same step boundary
                path = save(engine.step)
                reporter.log({"event": "terminated", "step": engine.step, "checkpoint": str(path)})
                raise Terminated()
            batch = dp.shard(loader.next_batch())
            lr = lr_at(engine.step + 1, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr_ratio)
            stats = engine.train_step(batch, lr)
            step, steps_this_run, last = engine.step, steps_this_run + 1, stats
            drain(wait=False)
            if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.steps):
                reporter.log(step_record(step, stats, lr, tokens_per_step, n_params, device, dtype))
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                reporter.log({"step": step, **(evaluate(engine, vals, dp) or {"val_loss": None})})
            if cfg.halt_at_step and step == cfg.halt_at_step and step < cfg.steps:
                path = save(step)
                reporter.log({"event": "halted", "step": step, "checkpoint": str(path)})
                return {"halted": True, "step": step, "checkpoint": str(path)}
            if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
                save(step, background=cfg.checkpoint_background)
            elif cfg.save_every and cfg.checkpoint_background and dp.is_main and hasattr(engine, "prepare_snapshot"):
                # Touch the next background save's copies early enough (at a page-fault rate of 2 GB/s, half the
                # slowest seen) that the copies themselves run at memory speed when the save starts.
                to_save = cfg.save_every - step % cfg.save_every
                lead = math.ceil(engine.snapshot_bytes() / 2e9 / max(stats.wall_s, 1e-3)) + 1
                if to_save <= lead and step + to_save < cfg.steps:
                    engine.prepare_snapshot()
        val_metrics = evaluate(engine, vals, dp) or {}
        val = val_metrics.get("val_loss")
        save(engine.step)
        if not dp.is_main:
            dp.barrier()  # rank 0 writes final/
            return {"event": "final", "step": engine.step, "rank": dp.rank, "world_size": dp.world}
        weights = engine.state_dict()
        final_dir, sha = ckpt.save_final(out, weights, mcfg.to_dict())
        _, rss_peak = host_memory_bytes()
        gpu = gpu_peak_bytes(device)
        summary = {
            "event": "final", "step": engine.step, "engine": cfg.engine, "model": mcfg.name,
            "n_params": n_params, "final_loss": None if last is None else last.loss, "val_loss": val,
            **{k: v for k, v in val_metrics.items() if k != "val_loss"},
            "weights_sha256": sha, "final_dir": str(final_dir), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "dtype": str(dtype).replace("torch.", ""), "steps_this_run": steps_this_run,
            "run_seconds": round(time.perf_counter() - t_run, 2), "tokens_per_step": tokens_per_step,
            "peak_flops": peak_flops(device, dtype), "host_peak_rss_gb": round(rss_peak / 2**30, 3),
            "gpu_peak_gb": None if gpu is None else round(gpu / 2**30, 3),
            "resumed_from_step": resumed_from,
            **({"world_size": dp.world, "data_parallel": getattr(engine, "data_parallel", None)} if dp.enabled else {}),
            **({"plan": engine.plan.to_dict()} if getattr(engine, "plan", None) is not None else {}),
            **({"host_master": engine.host_master, "host_adam_elements": engine.adam_elements}
               if hasattr(engine, "host_master") else {}),
        }
        reporter.log(summary)
        reporter.final(summary)
        dp.barrier()
        return summary
