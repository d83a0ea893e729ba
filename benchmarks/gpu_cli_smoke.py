"""The trainer CLI end to end on whatever device is there (meant for the GPU box): both engines,
halt + resume, SIGTERM checkpointing, final summary. Prints one JSON line per check.

    python benchmarks/gpu_cli_smoke.py
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plasma_pipeline_tests.train.shards import write_shards  # noqa: E402


def cli(cfg: dict, path: Path, **kw) -> subprocess.Popen:
    path.write_text(json.dumps(cfg))
    return subprocess.Popen([sys.executable, "-m", "plasma_pipeline.train", "--config", str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def summary(out: str) -> dict:
    return json.loads([l for l in out.splitlines() if l.startswith("TRAIN_SUMMARY ")][-1][14:])


def main() -> int:
    tmp = Path(tempfile.mkdtemp())
    data = write_shards(tmp / "data", seq_len=128, vocab=512, rows_per_file=64)
    ok = True
    for engine in ("resident", "streaming"):
        base = {"model": "toy", "model_overrides": {"max_seq_len": 128}, "data_dir": str(data), "steps": 30,
                "batch_size": 8, "engine": engine, "lr": 1e-3, "warmup": 3, "val_batches": 1, "keep_last": 2}
        out = tmp / engine
        p = cli({**base, "out_dir": str(out), "halt_at_step": 10}, tmp / "a.json")
        so, se = p.communicate(timeout=300)
        halted = p.returncode == 0 and (out / "checkpoints" / "step-000010").is_dir()
        p = cli({**base, "out_dir": str(out)}, tmp / "b.json")
        so, se = p.communicate(timeout=300)
        s = summary(so) if p.returncode == 0 else {"stderr": se[-2000:]}
        res = {"check": f"halt+resume {engine}", "halted": halted, "rc": p.returncode,
               "steps_this_run": s.get("steps_this_run"), "final_loss": s.get("final_loss"),
               "sha": s.get("weights_sha256"), "device": s.get("device_name"), "err": s.get("stderr")}
        res["pass"] = halted and p.returncode == 0 and s.get("steps_this_run") == 20
        ok &= res["pass"]
        print(json.dumps(res), flush=True)
        # SIGTERM mid-run: a checkpoint at a step boundary, exit 143, and it resumes from there.
        out2 = tmp / f"{engine}-term"
        p = cli({**base, "out_dir": str(out2), "steps": 100000, "log_every": 1}, tmp / "c.json")
        t0 = time.time()
        while time.time() - t0 < 240:
            line = p.stdout.readline()
            if line.startswith("{") and json.loads(line).get("step", 0) >= 5:
                break
        p.send_signal(signal.SIGTERM)
        so, se = p.communicate(timeout=120)
        from plasma_pipeline.train.checkpoint import latest_checkpoint

        ck = latest_checkpoint(out2)
        res = {"check": f"sigterm {engine}", "rc": p.returncode, "checkpoint": None if ck is None else ck.name}
        res["pass"] = p.returncode == 143 and ck is not None
        ok &= res["pass"]
        print(json.dumps(res), flush=True)
    print(json.dumps({"all_pass": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
