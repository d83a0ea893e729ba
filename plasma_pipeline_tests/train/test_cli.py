"""`python -m plasma_pipeline.train` as the orchestrator runs it: a subprocess with a JSON config."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from plasma_pipeline.train.checkpoint import latest_checkpoint, sha256_file
from plasma_pipeline.train.model import load_model

REPO = Path(__file__).resolve().parents[2]


def start(tmp_path, data, **kw):
    conf = {"model": "toy", "data_dir": str(data), "out_dir": str(tmp_path / "out"), "steps": 8, "batch_size": 4,
            "engine": "streaming", "device": "cpu", "val_batches": 1, "save_every": 4, **kw}
    (tmp_path / "run.json").write_text(json.dumps(conf))
    return subprocess.Popen([sys.executable, "-m", "plasma_pipeline.train", "--config", str(tmp_path / "run.json")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_end_to_end(tmp_path, shards):
    p = start(tmp_path, shards)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    lines = out.splitlines()
    summary = json.loads(next(l for l in lines if l.startswith("TRAIN_SUMMARY "))[len("TRAIN_SUMMARY "):])
    final = tmp_path / "out" / "final"
    assert summary["weights_sha256"] == sha256_file(final / "model.safetensors")
    assert summary["step"] == 8 and summary["val_loss"] is not None
    records = [json.loads(l) for l in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 9))
    for key in ("lr", "tokens_per_s", "model_tflops", "mfu", "host_rss_gb", "streamed_gb", "gpu_peak_gb"):
        assert key in steps[0]
    assert steps[0]["mfu"] is None  # CPU: no peak to compare against
    model = load_model(final)
    assert model.cfg.name == "toy"


def test_cli_sigterm_saves_and_exits_nonzero(tmp_path, shards):
    p = start(tmp_path, shards, steps=100000, save_every=0, log_every=1)
    t0 = time.time()
    while time.time() - t0 < 120:
        line = p.stdout.readline()
        if line.startswith("{") and json.loads(line).get("step", 0) >= 3:
            break
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    ck = latest_checkpoint(tmp_path / "out")
    assert ck is not None and json.loads((ck / "state.json").read_text())["step"] >= 3


def test_train_package_imports_no_dagster_or_other_stages():
    code = (
        "import sys, plasma_pipeline.train.trainer, plasma_pipeline.train.streaming, plasma_pipeline.train.resident, "
        "plasma_pipeline.train.__main__\n"
        "bad = [m for m in sys.modules if (m == 'dagster' or m.startswith('dagster.')) or "
        "(m.startswith('plasma_pipeline.') and not m.startswith('plasma_pipeline.train'))]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
