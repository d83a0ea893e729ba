"""Checkpoints: safetensors for tensors, JSON for the rest; never pickle.

Layout: out_dir/checkpoints/step-000123/{model.safetensors, optimizer.safetensors, state.json, config.json}.
state.json is written last and records the byte size and sha256 of the other three ("files"), so a resume can
tell an intact checkpoint from a truncated or bit-flipped one and fall back to the previous intact checkpoint.
A checkpoint found bad is renamed to checkpoints/.corrupt-step-000123 (kept for inspection, never retried) and
deleted by prune once an intact checkpoint at that step or later has been saved.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import torch

_STEP_DIR = re.compile(r"^step-(\d+)$")
_CORRUPT_DIR = re.compile(r"^\.corrupt-step-(\d+)")


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def rng_state() -> dict[str, object]:
    """Torch RNG states, base64 (so state.json stays JSON)."""
    out: dict[str, object] = {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available():
        out["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(d: dict) -> None:
    def dec(s: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)

    torch.set_rng_state(dec(d["torch"]))
    if "cuda" in d and torch.cuda.is_available() and len(d["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([dec(s) for s in d["cuda"]])


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (state.json written last, dir renamed into place), oldest first."""
    root = Path(out_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = _STEP_DIR.match(p.name)
            if m and (p / "state.json").is_file():
                found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    ck = list_checkpoints(out_dir)
    return ck[-1][1] if ck else None


def _file_record(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def save_checkpoint(out_dir: str | Path, step: int, weights: dict, optim: dict, state: dict,
                    model_config: dict, keep_last: int) -> Path:
    """Write into a temp dir and rename into place, then prune to the newest keep_last.

    state.json (written last) gets "files": {name: {"bytes", "sha256"}} of the other files; each file is hashed
    on a thread while the next one is written (hashlib releases the GIL), right after it was written (page cache)."""
    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    if tmp.exists():  # left by a crash of this same pid number: never a complete checkpoint
        shutil.rmtree(tmp)
    tmp.mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:
        _save_tensors(weights, tmp / "model.safetensors")
        hashes = {"model.safetensors": pool.submit(_file_record, tmp / "model.safetensors")}
        _save_tensors(optim, tmp / "optimizer.safetensors")
        hashes["optimizer.safetensors"] = pool.submit(_file_record, tmp / "optimizer.safetensors")
        (tmp / "config.json").write_text(json.dumps(model_config, indent=2))
        hashes["config.json"] = pool.submit(_file_record, tmp / "config.json")
        files = {name: fut.result() for name, fut in hashes.items()}
    (tmp / "state.json").write_text(json.dumps({**state, "files": files}, indent=2))
    if final.exists():  # same step saved again (e.g. SIGTERM right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    prune_checkpoints(out_dir, keep_last, saved_step=step)
    return final


def prune_checkpoints(out_dir: str | Path, keep_last: int, saved_step: int | None = None) -> None:
    """Keep the newest keep_last checkpoints at or before saved_step (the one just written; default: the newest
    that passes a size check), so an intact checkpoint is never pruned in favour of a bad newer one. Checkpoints
    after saved_step are left to the resume walk, which verifies them. Also removes .corrupt-step-N dirs that an
    intact checkpoint at step >= N supersedes, and partial saves of dead processes."""
    root = Path(out_dir) / "checkpoints"
    ck = list_checkpoints(out_dir)
    if saved_step is None:
        saved_step = next((s for s, p in reversed(ck) if verify_checkpoint(p, deep=False) is None), None)
    if saved_step is not None:
        upto = [p for s, p in ck if s <= saved_step]
        for p in upto[: max(0, len(upto) - max(1, keep_last))]:
            shutil.rmtree(p, ignore_errors=True)
        for p in root.glob(".corrupt-step-*"):
            m = _CORRUPT_DIR.match(p.name)
            if m and int(m.group(1)) <= saved_step:
                shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp-step-*"):
        if not p.name.endswith(f"-{os.getpid()}"):  # partial saves of dead processes (the work dir lock
            shutil.rmtree(p, ignore_errors=True)     # guarantees no other live trainer writes here)


def verify_checkpoint(path: str | Path, deep: bool = True) -> str | None:
    """What is wrong with a checkpoint dir, as "<file path> is ..." (None: nothing found wrong).

    Checks state.json parses and that the files it records have their recorded sizes and (deep) sha256.
    Checkpoints from before hashes were recorded pass here; load them to find out (see load_latest_intact)."""
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text())
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        return f"{path / 'state.json'} is unreadable ({e})"
    files = state.get("files")
    if not isinstance(files, dict):
        return None
    for name, rec in files.items():
        f = path / name
        try:
            size = f.stat().st_size
        except FileNotFoundError:
            return f"{f} is missing"
        want = rec.get("bytes")
        if want is not None and size != want:
            if size < want:
                return f"{f} is truncated ({size} of {want} bytes)"
            return f"{f} has {size} bytes, {want} expected"
    if deep:
        for name, rec in files.items():
            f = path / name
            if rec.get("sha256") and (got := sha256_file(f)) != rec["sha256"]:
                return f"{f} is corrupt (sha256 {got[:12]}…, {rec['sha256'][:12]}… recorded at save)"
    return None


def quarantine_checkpoint(path: str | Path) -> Path:
    """Rename a bad checkpoint dir to .corrupt-step-N (not listed, so never resumed from again); returns the new path."""
    path = Path(path)
    dest = path.with_name(f".corrupt-{path.name}")
    if dest.exists():
        dest = path.with_name(f".corrupt-{path.name}-{os.getpid()}-{time.time_ns()}")
    os.replace(path, dest)
    return dest


def load_latest_intact(out_dir: str | Path, report: Callable[[str], None] = print,
                       ) -> tuple[Path, dict, dict, dict] | None:
    """(path, weights, optimizer state, state) of the newest intact checkpoint, or None if there is none.

    Walks checkpoints newest first; each bad one is reported (its path and what is wrong) and quarantined."""
    ck = list_checkpoints(out_dir)
    for i in range(len(ck) - 1, -1, -1):
        path = ck[i][1]
        problem = verify_checkpoint(path)
        if problem is None:
            try:
                weights, optim, state = load_checkpoint(path)
                return path, weights, optim, state
            except Exception as e:  # safetensors' SafetensorError, OSError, bad JSON, ...
                problem = f"{path} cannot be loaded ({type(e).__name__}: {e})"
        then = "trying the previous one" if i else "no older checkpoint left"
        try:
            moved = quarantine_checkpoint(path)
            where = f"; moved to {moved.name}"
        except OSError as e:
            where = f"; could not move it aside ({e})"
        report(f"checkpoint {problem} — ignoring it{where}, {then}")
    return None


def load_checkpoint(path: str | Path) -> tuple[dict, dict, dict]:
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    return _load_tensors(path / "model.safetensors"), _load_tensors(path / "optimizer.safetensors"), state


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """model.safetensors from a final/ or checkpoint dir (or the file itself)."""
    path = Path(path)
    return _load_tensors(path / "model.safetensors" if path.is_dir() else path)


def save_final(out_dir: str | Path, weights: dict, model_config: dict) -> tuple[Path, str]:
    """out_dir/final/{model.safetensors, config.json}; returns (dir, sha256 of model.safetensors)."""
    final = Path(out_dir) / "final"
    tmp = Path(out_dir) / f".tmp-final-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save_tensors(weights, tmp / "model.safetensors")
    (tmp / "config.json").write_text(json.dumps(model_config, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final, sha256_file(final / "model.safetensors")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- background saves from host memory

_ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64"}


class _SafetensorsLayout:
    """A safetensors file laid out up front (header, then tensors in the order they will be written), so the
    tensors can be streamed into it one unit at a time and the file still loads with safetensors."""

    def __init__(self, entries: list[tuple[str, torch.dtype, tuple[int, ...]]]):
        header, off = {}, 0
        self.offsets: dict[str, int] = {}
        for name, dtype, shape in entries:
            n = (math.prod(shape) if shape else 1) * torch.empty((), dtype=dtype).element_size()
            header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [off, off + n]}
            self.offsets[name] = off
            off += n
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self.prefix = len(blob).to_bytes(8, "little") + blob
        self.size = len(self.prefix) + off

    def write(self, fd: int, name: str, t: torch.Tensor, pool=None, piece: int = 1 << 26) -> list:
        """pwrite t's bytes at its place (in `piece`-byte parts on pool's threads: page-cache copies in parallel);
        returns the futures (empty without a pool)."""
        mv = memoryview(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy())
        pos = len(self.prefix) + self.offsets[name]

        def put(part, at):
            while part:
                n = os.pwrite(fd, part, at)
                part, at = part[n:], at + n

        if pool is None:
            put(mv, pos)
            return []
        return [pool.submit(put, mv[o : o + piece], pos + o) for o in range(0, len(mv), piece)]


class AsyncSave:
    """A checkpoint being written on a thread; result() waits and returns its directory (or raises)."""

    def __init__(self, step: int):
        self.step = step
        self._done = threading.Event()
        self._path: Path | None = None
        self._error: BaseException | None = None
        self.stats: dict = {}

    def done(self) -> bool:
        return self._done.is_set()

    def result(self) -> Path:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._path


def save_checkpoint_async(out_dir: str | Path, step: int, engine, state: dict, model_config: dict,
                          keep_last: int) -> AsyncSave:
    """Save a checkpoint without stopping training, straight from the engine's host memory.

    Engines with `snapshot_units()` (streaming) hand over their host tensors unit by unit: the writer takes each
    unit once that unit's last optimizer step has landed; a copier thread copies units (within the staging
    budget) while the next step computes, and the next step's host AdamW copies a unit that neither has reached
    yet and goes on. Copies are freed as soon as they are written. Other engines are saved from
    state_dict() on the thread. Same layout, hashes and atomic rename as save_checkpoint."""
    handle = AsyncSave(step)
    snap = engine.snapshot_units() if hasattr(engine, "snapshot_units") else None
    if snap is None:
        weights, optim = engine.state_dict(), engine.optimizer_state_dict()

    def work():
        t0 = time.perf_counter()
        try:
            root = Path(out_dir) / "checkpoints"
            root.mkdir(parents=True, exist_ok=True)
            final = root / f"step-{step:06d}"
            tmp = root / f".tmp-step-{step:06d}-{os.getpid()}-bg"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            if snap is None:
                _save_tensors(weights, tmp / "model.safetensors")
                _save_tensors(optim, tmp / "optimizer.safetensors")
            else:
                _write_units(snap, tmp)
            handle.stats["write_s"] = round(time.perf_counter() - t0, 2)
            (tmp / "config.json").write_text(json.dumps(model_config, indent=2))
            with ThreadPoolExecutor(max_workers=3) as pool:  # hashed after the units are released, off the gate
                names = ("model.safetensors", "optimizer.safetensors", "config.json")
                files = dict(zip(names, pool.map(lambda n: _file_record(tmp / n), names)))
            (tmp / "state.json").write_text(json.dumps({**state, "files": files}, indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            prune_checkpoints(out_dir, keep_last, saved_step=step)
            handle._path = final
        except BaseException as e:
            if snap is not None:
                snap.abort()
            handle._error = e
        finally:
            handle.stats["save_s"] = round(time.perf_counter() - t0, 2)
            if snap is not None:
                handle.stats["adam_gate_wait_s"] = round(snap.gate_wait_s, 3)
                handle.stats["staged_units"] = snap.staged_units
                handle.stats["staged_gb"] = round(snap.staged_bytes / 2**30, 3)
                handle.stats["adam_stage_s"] = round(snap.stage_s, 3)
                handle.stats["ahead_units"] = snap.ahead_units
                handle.stats["prepared_units"] = snap.prepared_units
                handle.stats["ahead_s"] = round(snap.ahead_s, 3)
            handle._done.set()

    threading.Thread(target=work, name=f"checkpoint-{step}", daemon=True).start()
    return handle


def _write_units(snap, tmp: Path) -> None:
    """Both safetensors files, unit by unit in the engine's order, releasing each unit as soon as it is written."""
    model = _SafetensorsLayout([(k, torch.float32, s) for unit in snap.layout for k, s in unit])
    optim = _SafetensorsLayout(
        [("step", torch.int64, ()), ("streaming.last_clipped", torch.int64, ())]
        + [(f"{k}.{m}", torch.float32, s) for unit in snap.layout for k, s in unit for m in ("exp_avg", "exp_avg_sq")])
    fds = [os.open(tmp / n, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
           for n in ("model.safetensors", "optimizer.safetensors")]
    try:
        for fd, lay in zip(fds, (model, optim)):
            os.pwrite(fd, lay.prefix, 0)
            os.ftruncate(fd, lay.size)
        for name, t in snap.scalars.items():
            optim.write(fds[1], name, t)
        with ThreadPoolExecutor(max_workers=8) as pool:
            for ui in range(len(snap.layout)):
                weights, m, v = snap.take(ui)  # waits for this unit's pending optimizer step
                jobs = [j for k, t in weights.items() for j in model.write(fds[0], k, t, pool)]
                jobs += [j for k, t in m.items() for j in optim.write(fds[1], f"{k}.exp_avg", t, pool)]
                jobs += [j for k, t in v.items() for j in optim.write(fds[1], f"{k}.exp_avg_sq", t, pool)]
                for j in jobs:
                    j.result()
                snap.release(ui)
    finally:
        snap.release_all()
        for fd in fds:
            os.close(fd)
