"""Progress bars on a terminal: `plasma clean` and `plasma dedup` show documents, rate and ETA with tqdm;
without a terminal (CI, Dagster's captured logs) they print nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLASMA = str(Path(sys.executable).parent / "plasma")
WORDS = "the river runs past old stone walls where children play and merchants sell bread".split()


@pytest.fixture
def corpus(tmp_path) -> Path:
    with open(tmp_path / "docs.jsonl", "w") as f:
        for i in range(300):
            text = ". ".join(" ".join(WORDS[(i + k) % len(WORDS):] + WORDS[:(i + k) % len(WORDS)])
                             for k in range(6)) + "."
            f.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")
    return tmp_path / "docs.jsonl"


@pytest.mark.parametrize("command", ["clean", "dedup"])
def test_cli_shows_documents_rate_and_eta_on_a_terminal_and_nothing_without_one(command, corpus, tmp_path):
    def run(progress: str) -> subprocess.CompletedProcess:
        out = tmp_path / f"out-{command}-{progress}"
        return subprocess.run([PLASMA, command, str(corpus), "--out", str(out)], capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PLASMA_PROGRESS": progress})

    shown, hidden = run("1"), run("")
    assert shown.returncode == 0 and hidden.returncode == 0, shown.stderr + hidden.stderr
    bar = shown.stderr.replace("\r", "\n").splitlines()
    last = [line for line in bar if line.startswith(command)][-1]
    assert "100%" in last and "300 docs" in last and "docs/s" in last, last  # done, documents, rate
    assert any("<" in line and "%" in line for line in bar)  # tqdm's elapsed<remaining: the ETA
    assert "docs/s" not in hidden.stderr and "%|" not in hidden.stderr
