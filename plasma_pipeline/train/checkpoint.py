"""Checkpoints: safetensors for tensors, JSON for the rest; never pickle.

Layout: out_dir/checkpoints/step-000123/{model.safetensors, optimizer.safetensors, state.json, config.json}.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import torch

_STEP_DIR = re.compile(r"^step-(\d+)$")


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


def save_checkpoint(out_dir: str | Path, step: int, weights: dict, optim: dict, state: dict,
                    model_config: dict, keep_last: int) -> Path:
    """Write into a temp dir and rename into place, then prune to the newest keep_last."""
    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    if tmp.exists():  # left by a crash of this same pid number: never a complete checkpoint
        shutil.rmtree(tmp)
    tmp.mkdir()
    _save_tensors(weights, tmp / "model.safetensors")
    _save_tensors(optim, tmp / "optimizer.safetensors")
    (tmp / "config.json").write_text(json.dumps(model_config, indent=2))
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    if final.exists():  # same step saved again (e.g. SIGTERM right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    prune_checkpoints(out_dir, keep_last)
    return final


def prune_checkpoints(out_dir: str | Path, keep_last: int) -> None:
    ck = list_checkpoints(out_dir)
    for _, p in ck[: max(0, len(ck) - max(1, keep_last))]:
        shutil.rmtree(p, ignore_errors=True)
    for p in (Path(out_dir) / "checkpoints").glob(".tmp-step-*"):
        if not p.name.endswith(f"-{os.getpid()}"):  # partial saves of dead processes
            shutil.rmtree(p, ignore_errors=True)


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
