"""Scale benchmark, stages 2-7: the real pipeline on 1x, 10x and 100x the demo's data, one stage per process.

    .venv/bin/python benchmarks/scale_bench.py --scales 1,10,100 [--seed 0] [--budget-s 1800] [--dup-rate 0.02]

Corpus. A deterministic corpus is built from the offline sources under data/sources (read with
`plasma_pipeline.collect.offline`): English/French/Spanish wiki summaries, Wikibooks recipes, chatterbot dialogs
and the Gutenberg Shakespeare/Milton texts. Every document is a pure function of (seed, genre, index), so no
document needs to be kept in memory and a copy can be regenerated anywhere in the stream:

- wiki: a title and 5-12 sentences (in 1-3 paragraphs) drawn at random from all summaries of one language
  (en 40 %, fr 35 %, es 25 % of wiki documents);
- recipes: a title, 4-12 ingredient lines and 3-9 steps drawn from all recipes, in the offline recipe layout;
- literature: 8-18 paragraphs (speeches, stanzas; longer ones split into groups of lines) from all plays and poems;
- dialog: 8-16 conversations drawn from all distinct chatterbot conversations.

Pool units are distinct and 20-400 characters long, a document draws distinct units, and no unit may hold more
than 30 % of a document's characters (the draw is repeated until none does).
1x is 30,000 documents (wiki 16,500, recipes 4,500, literature 6,000, dialog 3,000; about 40 MB of text, the
size of the demo's ~30,000 documents / 35 MB); Nx has N times as many documents of each genre. Because parts are
drawn independently from pools of 870 (dialog) to 42,000 (literature) units, two generated documents sharing
the ~82 % of their text that a 5-gram Jaccard of 0.7 needs is vanishingly unlikely at any scale: the documents are
unique by construction, except the planted copies.

Planted near-duplicates. A seeded share `--dup-rate` (2 %) of each genre's slots are copies: slot i takes the
text of a uniformly chosen non-copy slot j of the same genre (anywhere in the stream, so usually another shard)
and substitutes every 45th word token (lower-cased `\\w+` tokens, the dedup's shingle words) starting at a random
offset with a different word. Each substitution changes the 5 shingles that contain it, so the word-5-gram
Jaccard of the pair is about (1 - 5/45) / (1 + 5/45) = 0.80; the exact value of every pair is computed at
generation and recorded with the pair's ids (data/scale/<N>x/corpus/planted.jsonl). An original picked by two
copies forms a cluster of three (two pairs).

Shards are jsonl files of at most 64 MB under data/scale/<N>x/corpus/<genre>/ (git-ignored), written streaming.

Pipeline. Per scale the benchmark writes data/scale/<N>x/recipe.yaml: one `kind: local` source per genre
(id_field `id`) with the default recipe's clean and score slices for that genre (wiki cleaned with
`languages: [en, fr, es]`), the default recipe's classifier, dedup and tokenizer sections, `store.root:
data/scale/<N>x/store`, `store.processes: 2`, `keep_versions: 1`, and `mix.total_tokens` = 6M x N (about 0.43 of
the tokens pretrain_shards tokenises, at 1x and 10x) with mix weights proportional to each genre's generated characters.
`tokenizer.sample_chars` stays at the default recipe's 2M at every scale: the tokenizer streams every document
to draw a fixed-size sample. Every run starts from an empty store and an empty Dagster instance
(data/scale/<N>x/dagster_home), then runs one `dagster asset materialize -m plasma_pipeline.definitions --select
<keys>` process per stage with PLASMA_RECIPE and DAGSTER_HOME set:

    collect (raw/*; stage 1, input of the others, reported but not a target) -> clean (clean/*) ->
    classifiers (quality_classifier, toxicity_classifier; the first scale only) -> score (scored/*) ->
    dedup (deduped) -> tokenizer -> pretrain_shards

Classifiers are trained once, at the smallest scale of the run (1x): for larger scales the 1x store's
`quality_classifier` and `toxicity_classifier` folders are copied into the scale's store before `score` runs, and
nothing is materialized for them in that scale's Dagster instance, so the scored assets read the store's CURRENT
version of each (the documented fallback of StepInputs, which logs a warning). Every scale is scored with the
same two models.

Measurements per stage and scale: wall time of the process; peak RSS of the whole process tree (every ~0.2 s the
VmRSS of the dagster process and all its descendants is summed, the maximum is kept; shared pages are counted
once per process, so this is an upper bound of the memory in use); the largest single process's RSS; CPU seconds
of the tree (the last utime+stime seen of every process, summed); documents/s (the stage's input documents:
collect the corpus documents, clean the raw rows, classifiers the clean rows of their sources, score the clean
rows, dedup the scored rows, tokenizer and pretrain_shards the deduped rows); tokens/s for tokenizer and
pretrain_shards (from the manifest stats/metadata); and the store's disk use after the stage (du).

Dedup quality, from the store after `deduped`:
- input = documents in the scored versions (the dedup's input) minus the documents the eval hold-out removed
  (listed in the deduped metadata `eval_holdout.dropped`; they contain eval battery text, which is not a
  dedup decision); output = documents in `deduped`; removed = input minus output (exact or near duplicates).
- recall = among planted pairs with both sides in the input, the share with at least one side removed.
- FPR = among input documents that belong to no planted pair (unique by construction), the share removed.
The expected recall of the 14 x 8 bands at each pair's Jaccard, 1 - (1 - J^8)^14 averaged over the pairs, is
printed beside it.

Targets (on the 2-core machine): every stage's peak RSS at 100x <= 4 GiB and flat from 10x to 100x (ratio <= 1.2);
dedup's peak RSS within `dedup.memory_gb` (read from the loaded recipe when DedupConfig has that field); time per
document from 10x to 100x grows by at most 1.2x; dedup recall and FPR at 100x the same as at 1x (within 0.01).

`--stages clean,score,...` runs only the named stages; with `--resume` a scale keeps its store, Dagster instance,
recipe and the results of its other stages (merged from the results file of the same date), so a scale can be
finished stage by stage (the 100x run: collect and clean in one sitting, score to pretrain_shards in another).
The code under measurement is the `plasma_pipeline` that `python` imports (PYTHONPATH decides, and the stage
processes inherit it): run from a git worktree at a fixed commit, with `data` linked to the main checkout's,
so edits in the main tree do not change what is measured; each stage records that commit (`git`).

`--budget-s` (default 1800): a scale whose generation plus stages run past it has its running stage killed
(process group, SIGTERM then SIGKILL) and its remaining stages skipped; what finished is recorded. Results go to
benchmarks/results/scale_<date>.json (rewritten after every stage) and scale_<date>.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SCALE_DIR = ROOT / "data" / "scale"
RESULTS = ROOT / "benchmarks" / "results"
DAGSTER = Path(sys.executable).parent / "dagster"  # the dagster CLI of the interpreter running this

GENRES = ("wiki", "recipes", "literature", "dialog")
BASE_DOCS = {"wiki": 16_500, "recipes": 4_500, "literature": 6_000, "dialog": 3_000}  # 1x
WIKI_LANGS = (("en", "en-us", 0.40), ("fr", "fr-fr", 0.35), ("es", "es-es", 0.25))
SHARD_BYTES = 64 * 1024 * 1024
EDIT_EVERY = 45  # substitute every 45th word token of a copy: J ~ (1 - 5/45) / (1 + 5/45) = 0.8
NGRAM = 5
TOKENS_PER_SCALE = 6_000_000  # mix.total_tokens at 1x
WORD = re.compile(r"\w+")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'«¿¡(]?[A-ZÀ-ÖØ-Þ])")
REPLACEMENTS = (
    "amber basalt cobalt dune ember fjord garnet harbor indigo jasper kelp lagoon meadow nickel orchid pebble "
    "quartz raven saffron tundra umber velvet willow yarrow zephyr anvil beacon cinder delta falcon glacier "
    "hollow iris juniper kestrel lantern marsh nutmeg opal prairie quill ridge sable thistle upland vapor wren"
).split()
MIN_UNIT, MAX_UNIT = 20, 400  # characters of one pool unit
MAX_UNIT_SHARE = 0.3  # of a document's characters, at most, in one unit
GEN_VERSION = 2  # bump when document generation changes, so cached corpora are rebuilt

# (stage, selection, in targets)
STAGES = (
    ("collect", lambda: [f"raw/{g}" for g in GENRES], False),
    ("clean", lambda: [f"clean/{g}" for g in GENRES], True),
    ("classifiers", lambda: ["quality_classifier", "toxicity_classifier"], True),
    ("score", lambda: [f"scored/{g}" for g in GENRES], True),
    ("dedup", lambda: ["deduped"], True),
    ("tokenizer", lambda: ["tokenizer"], True),
    ("pretrain_shards", lambda: ["pretrain_shards"], True),
)
CLASSIFIERS = ("quality_classifier", "toxicity_classifier")
STAGE_PACKAGES = ("collect", "clean", "classify", "dedup", "tokenizer", "mix", "defs", "shards.py", "shard_work.py")


# --- corpus ------------------------------------------------------------------------------------------------------


def _split_long(text: str, max_chars: int) -> list[str]:
    """A paragraph as groups of whole lines of at most ~max_chars (a longer single line stays whole)."""
    if len(text) <= max_chars:
        return [text]
    out, cur = [], []
    for line in text.split("\n"):
        if cur and sum(len(x) + 1 for x in cur) + len(line) > max_chars:
            out.append("\n".join(cur))
            cur = []
        cur.append(line)
    if cur:
        out.append("\n".join(cur))
    return out


def _unique(units, lo: int = MIN_UNIT, hi: int = MAX_UNIT) -> list[str]:
    return list(dict.fromkeys(u for u in units if lo <= len(u) <= hi))


def load_pools() -> dict:
    """The units documents are drawn from, per genre (all offline files, a few MB): distinct units of 20-400
    characters (wiki sentences, recipe ingredient lines and steps, play/poem paragraphs split into groups of
    lines, chatterbot conversations)."""
    from plasma_pipeline.collect.config import (
        DialogSourceConfig,
        LiteratureSourceConfig,
        RecipesSourceConfig,
        WikiSourceConfig,
    )
    from plasma_pipeline.collect.offline import iter_offline

    pools: dict = {"wiki": {}}
    for lang, locale, _ in WIKI_LANGS:
        titles, sentences = [], []
        for d in iter_offline(WikiSourceConfig(langs=[locale]), Counter()):
            title, _, body = d.text.partition("\n\n")
            titles.append(title.strip())
            sentences += SENTENCE_END.split(" ".join(body.split()))
        pools["wiki"][lang] = (_unique(titles, 1), _unique(sentences, 40))
    titles, ingredients, steps = [], [], []
    for d in iter_offline(RecipesSourceConfig(), Counter()):
        titles.append(d.meta["title"].strip())
        ingredients += [str(i).strip() for i in d.meta["ingredients"]]
        steps += [str(s).strip() for s in d.meta["steps"]]
    pools["recipes"] = (_unique(titles, 1), _unique(ingredients, 3), _unique(steps))
    paragraphs = []
    for d in iter_offline(LiteratureSourceConfig(), Counter()):
        for p in re.split(r"\n[ \t]*\n", d.text):
            if len(p.split()) >= 4:
                paragraphs += _split_long(p.strip("\n"), MAX_UNIT)
    pools["literature"] = _unique(paragraphs)
    pools["dialog"] = _unique(d.text for d in iter_offline(DialogSourceConfig(unit="dialog"), Counter()))
    return pools


def _draw(rng: random.Random, pool: list[str], lo: int, hi: int) -> list[str]:
    """lo..hi distinct units, redrawn until no unit holds more than MAX_UNIT_SHARE of the characters."""
    for _ in range(50):
        units = rng.sample(pool, rng.randint(lo, hi))
        if max(map(len, units)) <= MAX_UNIT_SHARE * sum(map(len, units)):
            return units
    return units


def make_doc(pools: dict, seed: int, genre: str, i: int) -> str:
    """Document `i` of `genre`: a pure function of (seed, genre, i). Every document has at least 5 distinct units
    and none holds more than 30 % of its characters, so two documents are near-duplicates (5-gram Jaccard >= 0.7
    needs about 82 % shared text) only if they share most of their units, which independent draws from pools of
    2,000-36,000 units practically never do."""
    rng = random.Random((seed * 1_000_003 + GENRES.index(genre)) * 10_000_000_000 + i)
    if genre == "wiki":
        u, acc = rng.random(), 0.0
        for lang, _, share in WIKI_LANGS:
            acc += share
            if u < acc:
                break
        titles, sentences = pools["wiki"][lang]
        units = _draw(rng, sentences, 5, 12)
        cuts = sorted(rng.sample(range(1, len(units)), rng.randint(0, 2)))
        paras = [" ".join(units[a:b]) for a, b in zip([0, *cuts], [*cuts, len(units)])]
        return rng.choice(titles) + "\n\n" + "\n\n".join(paras)
    if genre == "recipes":
        titles, ingredients, steps = pools["recipes"]
        lines = [rng.choice(titles), ""]
        if rng.random() < 0.5:
            lines += [f"Servings: {rng.randint(1, 12)}", ""]
        for _ in range(50):
            ing, stp = rng.sample(ingredients, rng.randint(4, 12)), rng.sample(steps, rng.randint(3, 9))
            if max(map(len, stp)) <= MAX_UNIT_SHARE * (sum(map(len, stp)) + sum(map(len, ing))):
                break
        lines += ["Ingredients:", *(f"- {x}" for x in ing), ""]
        lines += ["Steps:", *(f"{n}. {x}" for n, x in enumerate(stp, 1))]
        return "\n".join(lines)
    if genre == "literature":
        return "\n\n".join(_draw(rng, pools["literature"], 8, 18))
    return "\n\n".join(_draw(rng, pools["dialog"], 8, 16))


def perturb(text: str, rng: random.Random) -> str:
    """Substitute every EDIT_EVERY-th word token (from a random offset) with a different word."""
    spans = [m.span() for m in WORD.finditer(text)]
    if not spans:
        return text + " " + rng.choice(REPLACEMENTS)
    first = rng.randrange(EDIT_EVERY)
    picks = list(range(first, len(spans), EDIT_EVERY)) or [len(spans) // 2]
    out, pos = [], 0
    for k in picks:
        a, b = spans[k]
        old = text[a:b].lower()
        new = rng.choice(REPLACEMENTS)
        while new == old:
            new = rng.choice(REPLACEMENTS)
        out += [text[pos:a], new]
        pos = b
    out.append(text[pos:])
    return "".join(out)


def shingles(text: str) -> set:
    w = WORD.findall(text.lower())
    if len(w) < NGRAM:
        return {tuple(w)} if w else set()
    return {tuple(w[i : i + NGRAM]) for i in range(len(w) - NGRAM + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / max(1, len(sa | sb))


def corpus_params(scale: int, seed: int, dup_rate: float) -> dict:
    return {"gen_version": GEN_VERSION, "scale": scale, "seed": seed, "dup_rate": dup_rate,
            "docs": {g: BASE_DOCS[g] * scale for g in GENRES}, "edit_every": EDIT_EVERY, "shard_bytes": SHARD_BYTES}


def build_corpus(scale: int, seed: int, dup_rate: float, log) -> dict:
    """Write data/scale/<scale>x/corpus (cached: rebuilt only when its parameters differ)."""
    out = SCALE_DIR / f"{scale}x" / "corpus"
    params = corpus_params(scale, seed, dup_rate)
    info_path = out / "corpus.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if info.get("params") == params:
            log(f"{scale}x: corpus exists ({info['docs']:,} docs, {info['bytes'] / 1e6:,.0f} MB), reused")
            info["reused"] = True
            return info
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.monotonic()
    pools = load_pools()
    per_genre, total_docs, total_bytes, n_pairs = {}, 0, 0, 0
    with open(out / "planted.jsonl.tmp", "w") as planted:
        for gi, genre in enumerate(GENRES):
            n = params["docs"][genre]
            nrng = np.random.default_rng([seed, gi, n])
            is_copy = nrng.random(n) < dup_rate
            originals = np.flatnonzero(~is_copy)
            orig_of = np.full(n, -1, dtype=np.int64)
            orig_of[is_copy] = originals[nrng.integers(len(originals), size=int(is_copy.sum()))]
            (out / genre).mkdir()
            shard, f, fbytes, gbytes, chars, js = 0, None, 0, 0, 0, []
            for i in range(n):
                j = int(orig_of[i])
                if j < 0:
                    text = make_doc(pools, seed, genre, i)
                else:
                    base = make_doc(pools, seed, genre, j)
                    text = perturb(base, random.Random(f"{seed}:{genre}:copy:{i}"))
                    jac = jaccard(base, text)
                    js.append(jac)
                    planted.write(json.dumps([genre, f"{genre}-{j:09d}", f"{genre}-{i:09d}", round(jac, 4)]) + "\n")
                line = (json.dumps({"id": f"{genre}-{i:09d}", "text": text}, ensure_ascii=False) + "\n").encode()
                if f is None or fbytes + len(line) > SHARD_BYTES:
                    if f is not None:
                        f.close()
                    f = open(out / genre / f"part-{shard:05d}.jsonl", "wb")
                    shard, fbytes = shard + 1, 0
                f.write(line)
                fbytes += len(line)
                gbytes += len(text.encode())
                chars += len(text)
            f.close()
            per_genre[genre] = {"docs": n, "text_bytes": gbytes, "chars": chars, "shards": shard,
                                "planted_copies": int(is_copy.sum()),
                                "jaccard_mean": float(np.mean(js)) if js else None,
                                "jaccard_min": float(np.min(js)) if js else None,
                                "jaccard_max": float(np.max(js)) if js else None}
            total_docs += n
            total_bytes += gbytes
            n_pairs += int(is_copy.sum())
            log(f"{scale}x: {genre}: {n:,} docs, {gbytes / 1e6:,.1f} MB, {shard} shards, "
                f"{int(is_copy.sum()):,} planted copies (J mean {per_genre[genre]['jaccard_mean']:.3f})")
    os.replace(out / "planted.jsonl.tmp", out / "planted.jsonl")
    info = {"params": params, "docs": total_docs, "bytes": total_bytes, "planted_pairs": n_pairs,
            "genres": per_genre, "generate_s": round(time.monotonic() - t0, 1),
            "jsonl_bytes": sum(p.stat().st_size for p in out.glob("*/*.jsonl"))}
    info_path.write_text(json.dumps(info, indent=1))
    info["reused"] = False
    return info


# --- recipe ------------------------------------------------------------------------------------------------------


def write_recipe(scale: int, corpus: dict) -> Path:
    import yaml

    default = yaml.safe_load((ROOT / "recipes" / "default.yaml").read_text())
    rel = f"data/scale/{scale}x"
    sources = {}
    for g in GENRES:
        d = default["sources"][g]
        clean = dict(d["clean"])
        if g == "wiki":
            clean["languages"] = ["en", "fr", "es"]
        sources[g] = {"kind": "local", "paths": [f"{rel}/corpus/{g}/*.jsonl"], "id_field": "id",
                      "clean": clean, "score": dict(d["score"])}
    chars = {g: corpus["genres"][g]["chars"] for g in GENRES}
    total = sum(chars.values())
    recipe = {
        "name": f"scale-{scale}x",
        "description": f"benchmarks/scale_bench.py: the generated {scale}x corpus, stages 1-7.",
        "store": {"root": f"{rel}/store", "keep_versions": 1, "max_rows_per_shard": 4000, "processes": 2},
        "sources": sources,
        "classifiers": default["classifiers"],
        "dedup": default["dedup"],
        "tokenizer": default["tokenizer"],
        "mix": {**default["mix"], "weights": {g: round(chars[g] / total, 4) for g in GENRES},
                "total_tokens": TOKENS_PER_SCALE * scale, "seq_len": 1024},
    }
    for k in ("model", "pretrain", "instructions", "sft_shards", "sft", "evaluation"):
        recipe[k] = default[k]
    path = SCALE_DIR / f"{scale}x" / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


# --- process-tree monitor ----------------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime + stime ticks) for every process we can read."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        out[int(name)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
    return out


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMonitor(threading.Thread):
    """Polls the process tree under `root` every `interval` s: peak summed VmRSS, peak single-process RSS, CPU."""

    def __init__(self, root: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_kb = self.peak_single_kb = self.polls = 0
        self.peak_procs = 0
        self.cpu_ticks: dict[int, int] = {}
        # CPU a process had used before the first poll (the benchmark itself, Dask workers started earlier)
        self.base_ticks: dict[int, int] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            table = _proc_table()
            children: dict[int, list[int]] = {}
            for pid, (ppid, _) in table.items():
                children.setdefault(ppid, []).append(pid)
            tree, todo = [], [self.root]
            while todo:
                p = todo.pop()
                if p in table:
                    tree.append(p)
                    todo += children.get(p, [])
            rss = [_rss_kb(p) for p in tree]
            for p in tree:
                if not self.polls:
                    self.base_ticks[p] = table[p][1]
                self.cpu_ticks[p] = max(self.cpu_ticks.get(p, 0), table[p][1])
            total = sum(rss)
            if total > self.peak_kb:
                self.peak_kb, self.peak_procs = total, len(tree)
            self.peak_single_kb = max([self.peak_single_kb, *rss])
            self.polls += 1
            self.stop_event.wait(self.interval)

    @property
    def cpu_s(self) -> float:
        used = sum(t - self.base_ticks.get(p, 0) for p, t in self.cpu_ticks.items())
        return used / os.sysconf("SC_CLK_TCK")


# --- running stages ----------------------------------------------------------------------------------------------

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) [+-]\d{4} - dagster - \w+ - \S+ - [0-9a-f-]{36} - "
                      r"(?:\d+ - )?(\w+) - (.*)$")
PROGRESS = re.compile(r"(\S+): shard (\d+)/(\d+), kept ([\d,]+) so far, dropped ([\d,]+)")


def parse_log(text: str) -> dict:
    """From a `dagster asset materialize` log: each step's wall span (first to last line naming it; 1 s
    resolution: the CLI does not print every STEP_SUCCESS), the span from the first step start to the last step
    line, and the last progress line of each per-shard asset (documents done so far)."""
    first, last, progress = {}, {}, {}
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        ts = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
        step = m.group(2)
        if step.isupper():  # a run-level event (RUN_START, ENGINE_EVENT, LOGS_CAPTURED, ...), not a step
            continue
        if "STEP_START" in m.group(3) or step not in first:
            first.setdefault(step, ts)
        last[step] = ts
        p = PROGRESS.search(m.group(3))
        if p:
            progress[p.group(1)] = {"shard": int(p.group(2)), "shards": int(p.group(3)),
                                    "docs": int(p.group(4).replace(",", "")) + int(p.group(5).replace(",", ""))}
    steps = {k: last[k] - first[k] for k in first}
    span = (max(last.values()) - min(first.values())) if first else 0.0
    return {"step_s": steps, "steps_span_s": span, "progress": progress}


def run_stage(scale: int, stage: str, keys: list[str], recipe: Path, deadline: float,
              monitor_root: int | None = None) -> dict:
    """One `dagster asset materialize` process; memory and CPU of its process tree, or of `monitor_root`'s (the
    benchmark's own, when a Dask cluster it started does the work)."""
    home = SCALE_DIR / f"{scale}x" / "dagster_home"
    logs = SCALE_DIR / f"{scale}x" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PLASMA_RECIPE": str(recipe), "DAGSTER_HOME": str(home)}
    cmd = [str(DAGSTER), "asset", "materialize", "-m", "plasma_pipeline.definitions", "--select", ",".join(keys)]
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    with open(logs / f"{stage}.log", "wb") as logf:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        mon = TreeMonitor(monitor_root or proc.pid)
        mon.start()
        killed = False
        while proc.poll() is None:
            if time.monotonic() > deadline:
                killed = True
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                break
            time.sleep(0.2)
        wall = time.monotonic() - t0
        mon.stop_event.set()
        mon.join()
    parsed = parse_log((logs / f"{stage}.log").read_text(errors="replace"))
    return {
        "stage": stage, "select": keys, "rc": proc.returncode, "killed_at_budget": killed,
        "wall_s": round(wall, 2), "cpu_s": round(mon.cpu_s, 1),
        "peak_rss_mib": round(mon.peak_kb / 1024, 1), "peak_single_rss_mib": round(mon.peak_single_kb / 1024, 1),
        "procs_at_peak": mon.peak_procs, "polls": mon.polls,
        "step_s": parsed["step_s"], "steps_span_s": parsed["steps_span_s"], "load_start": round(load0, 2),
        "load_end": round(os.getloadavg()[0], 2), "progress_at_end": parsed["progress"],
        "docs_done_at_end": sum(p["docs"] for p in parsed["progress"].values()),
        "log": str((logs / f"{stage}.log").relative_to(ROOT)),
    }


def store_for(scale: int):
    from plasma_pipeline.shards import ShardStore

    return ShardStore(None, SCALE_DIR / f"{scale}x" / "store")


def current(store, asset: str):
    try:
        return store.current(asset)
    except (FileNotFoundError, OSError):
        return None


def rows(store, assets: list[str]) -> int | None:
    vs = [current(store, a) for a in assets]
    return None if any(v is None for v in vs) else sum(v.rows for v in vs)


def du_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else 0


def _num(d: dict, *names: str):
    for n in names:
        if isinstance(d.get(n), (int, float)) and not isinstance(d.get(n), bool):
            return d[n]
    return None


def stage_counts(scale: int, stage: str, corpus: dict, recipe) -> dict:
    """Input/output documents and, where the stage reports them, tokens, read from the store."""
    store = store_for(scale)
    raw, clean = [f"raw/{g}" for g in GENRES], [f"clean/{g}" for g in GENRES]
    scored = [f"scored/{g}" for g in GENRES]
    out: dict = {}
    if stage == "collect":
        out = {"docs_in": corpus["docs"], "docs_out": rows(store, raw)}
    elif stage == "clean":
        out = {"docs_in": rows(store, raw), "docs_out": rows(store, clean)}
    elif stage == "classifiers":
        srcs = list(dict.fromkeys(recipe.quality.positive_sources + recipe.quality.negative_sources))
        out = {"docs_in": rows(store, [f"clean/{s}" for s in srcs])}
    elif stage == "score":
        out = {"docs_in": rows(store, clean), "docs_out": rows(store, scored)}
    elif stage == "dedup":
        v = current(store, "deduped")
        out = {"docs_in": rows(store, scored), "docs_out": v.rows if v else None}
        if v is not None:
            out["counters"] = {k: n for k, n in v.stats.items() if k.startswith(("dropped/", "kept"))}
    elif stage in ("tokenizer", "pretrain_shards"):
        v = current(store, stage)
        out = {"docs_in": rows(store, ["deduped"])}
        if v is not None:
            meta, stats = v.manifest.get("metadata") or {}, v.stats
            if stage == "tokenizer":
                # It trains on a fixed-size sample, not on the corpus: tokens of that sample, from its chars and
                # the bytes/token it measured per domain.
                chars, bpt = meta.get("sample_chars_per_domain") or {}, meta.get("bytes_per_token") or {}
                out["tokens"] = round(sum(c / bpt[d] for d, c in chars.items() if bpt.get(d))) or None
                out["tokens_what"] = "training sample tokens (sample chars / bytes per token)"
            else:
                doms = meta.get("domains") or {}
                avail = sum(int(d.get("available_tokens", 0)) for d in doms.values() if isinstance(d, dict))
                val = sum(n for k, n in stats.items() if k.startswith("tokens/val/"))
                out["tokens"] = (avail + val) or None
                out["tokens_what"] = "tokens tokenised (train available + val)"
                out["train_tokens"] = meta.get("total_tokens_achieved")
                out["rows_out"] = v.rows
            out["stats"] = {k: n for k, n in stats.items() if isinstance(n, (int, float))}
    return out


def dedup_quality(scale: int) -> dict:
    """Recall and FPR on the planted pairs (definitions in the module docstring)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from plasma_pipeline.collect.documents import doc_id

    store = store_for(scale)
    planted = [json.loads(line) for line in open(SCALE_DIR / f"{scale}x" / "corpus" / "planted.jsonl")]
    pairs = [(doc_id(g, a), doc_id(g, b), j) for g, a, b, j in planted]
    planted_ids = sorted({x for a, b, _ in pairs for x in (a, b)})
    value_set = __import__("pyarrow").array(planted_ids)

    def scan(versions) -> tuple[set, int]:
        present, total = set(), 0
        for v in versions:
            for path in v.shards():
                ids = pq.read_table(path, columns=["id"])["id"]
                total += len(ids)
                hit = pc.filter(ids, pc.is_in(ids, value_set=value_set))
                present.update(hit.to_pylist())
        return present, total

    dv = current(store, "deduped")
    holdout = (dv.manifest.get("metadata") or {}).get("eval_holdout") or {}
    held = {d["id"] for d in holdout.get("dropped", [])}
    listed_all = len(held) == holdout.get("documents_dropped")
    if not listed_all:  # the manifest lists at most 200: find the others among the documents missing from deduped
        held |= holdout_matches(scale, store, dv)
    inp, n_in = scan([current(store, f"scored/{g}") for g in GENRES])
    out, n_out = scan([dv])
    n_in -= len(held)  # held-out documents are not dedup input here
    held_planted = held & inp
    inp -= held
    eligible = [(a, b, j) for a, b, j in pairs if a in inp and b in inp]
    removed = [(a, b, j) for a, b, j in eligible if a not in out or b not in out]
    both = sum(1 for a, b, _ in eligible if a not in out and b not in out)
    uniq_in, uniq_out = n_in - len(inp), n_out - len(out)
    js = np.array([j for _, _, j in eligible]) if eligible else np.zeros(0)
    expected = float(np.mean(1 - (1 - js**8) ** 14)) if len(js) else None
    return {
        "planted_pairs": len(pairs), "eligible_pairs": len(eligible), "pairs_with_a_side_removed": len(removed),
        "pairs_with_both_removed": both,
        "recall": round(len(removed) / len(eligible), 4) if eligible else None,
        "expected_recall_lsh_14x8": round(expected, 4) if expected is not None else None,
        "unique_docs_in": uniq_in, "unique_docs_removed": uniq_in - uniq_out,
        "fpr": round((uniq_in - uniq_out) / uniq_in, 6) if uniq_in else None,
        "jaccard_mean": round(float(js.mean()), 4) if len(js) else None,
        "eval_holdout_dropped": len(held), "eval_holdout_listed_all": listed_all,
        "eval_holdout_found": len(held) == holdout.get("documents_dropped"),
        "eval_holdout_planted": len(held_planted),
    }


def holdout_matches(scale: int, store, dv) -> set:
    """Ids of the scored documents missing from `deduped` that the eval hold-out matches (the recipe's battery and
    dedup settings): hold-out drops, not dedup decisions."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from plasma_pipeline.instruct.holdout import Holdout
    from plasma_pipeline.recipe import load_recipe

    recipe = load_recipe(SCALE_DIR / f"{scale}x" / "recipe.yaml")
    h = Holdout.from_recipe(recipe.instructions, recipe.dedup)
    found: set = set()
    for g in GENRES:
        kept = pa_concat([pq.read_table(p, columns=["id"])["id"] for p in dv.shards(split=g)])
        for path in current(store, f"scored/{g}").shards():
            table = pq.read_table(path)
            missing = table.filter(pc.invert(pc.is_in(table["id"], value_set=kept)))
            if missing.num_rows:
                exact, near = h.match(missing, g)
                found.update(missing["id"].filter(pa.array((exact >= 0) | (near >= 0))).to_pylist())
    return found


def pa_concat(arrays):
    import pyarrow as pa

    return pa.chunked_array(arrays).combine_chunks() if arrays else pa.array([], pa.string())


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    paths = [f"plasma_pipeline/{p}" for p in STAGE_PACKAGES]
    status = [line for line in git("status", "--porcelain", "--", *paths).splitlines() if line.strip()]
    diff = git("diff", "HEAD", "--", *paths)
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "stage_packages_dirty": bool(status),
            "changed_files": len(status), "diff_sha1": hashlib.sha1(diff.encode()).hexdigest()[:12],
            "status": status}


def executor_recipe(recipe_path: Path, args) -> Path:
    """The scale's recipe with an `executor:` section (the Dask cluster's address, or local)."""
    import yaml

    raw = yaml.safe_load(recipe_path.read_text())
    raw["executor"] = {"kind": args.executor, **({"address": args.dask_address} if args.executor == "dask" else {})}
    out = recipe_path.with_name(f"recipe-{args.executor}.yaml")
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def copy_classifiers(src_scale: int, scale: int) -> None:
    src, dst = SCALE_DIR / f"{src_scale}x" / "store", SCALE_DIR / f"{scale}x" / "store"
    for asset in CLASSIFIERS:
        if not (src / asset / "CURRENT").exists():
            raise SystemExit(f"{src / asset} has no CURRENT version: run scale {src_scale} first")
        shutil.copytree(src / asset, dst / asset, ignore=shutil.ignore_patterns(".lock", ".leases", ".tmp-*"))


def run_scale(scale: int, args, classifier_scale: int | None, results: dict, save, log) -> None:
    import plasma_pipeline
    from plasma_pipeline.recipe import load_recipe

    t_start = time.monotonic()
    deadline = t_start + args.budget_s
    wanted = set(args.stages.split(",")) if args.stages else {s for s, _, _ in STAGES}
    unknown = wanted - {s for s, _, _ in STAGES}
    if unknown:
        raise SystemExit(f"--stages: unknown stages {sorted(unknown)}")
    prev = results["scales"].get(str(scale)) if args.resume else None
    entry: dict = {"scale": scale, "git": git_state(), "stages": [],
                   "package": str(Path(plasma_pipeline.__file__).parent)}
    if prev:
        entry = {**prev, "git_resume": entry["git"], "package": entry["package"], "stages": []}
    results["scales"][str(scale)] = entry
    corpus = build_corpus(scale, args.seed, args.dup_rate, log)
    entry["corpus"] = {k: v for k, v in corpus.items() if k != "params"}
    sdir = SCALE_DIR / f"{scale}x"
    recipe_path = sdir / "recipe.yaml"
    if not (args.resume and (sdir / "store").exists() and recipe_path.exists()):
        for d in ("store", "dagster_home", "logs"):
            shutil.rmtree(sdir / d, ignore_errors=True)
        (sdir / "dagster_home").mkdir(parents=True)
        shutil.copy(ROOT / "dagster.yaml", sdir / "dagster_home" / "dagster.yaml")
        recipe_path = write_recipe(scale, corpus)
    if args.executor:
        recipe_path = executor_recipe(recipe_path, args)
    recipe = load_recipe(recipe_path)
    entry["executor"] = dict(getattr(recipe, "executor", None).__dict__) if args.executor else None
    entry["recipe"] = str(recipe_path.relative_to(ROOT))
    entry["dedup_memory_gb"] = getattr(recipe.dedup, "memory_gb", None)
    entry["mix_total_tokens"] = recipe.mix.total_tokens
    save()
    old = {r["stage"]: r for r in (prev or {}).get("stages", [])}
    for stage, keys, _ in STAGES:
        if stage not in wanted:
            if stage in old:
                entry["stages"].append(old[stage])
            continue
        if stage == "classifiers" and classifier_scale is not None and classifier_scale != scale:
            if not all((sdir / "store" / a / "CURRENT").exists() for a in CLASSIFIERS):
                copy_classifiers(classifier_scale, scale)
            entry["classifiers_from"] = f"{classifier_scale}x"
            continue
        if time.monotonic() > deadline:
            entry["stages"].append({"stage": stage, "skipped": "budget"})
            continue
        log(f"{scale}x: {stage} ...")
        r = run_stage(scale, stage, keys(), recipe_path, deadline, monitor_root=args.monitor_root)
        if r["rc"] == 0:
            r.update(stage_counts(scale, stage, corpus, recipe))
            if r.get("docs_in"):
                r["docs_per_s"] = round(r["docs_in"] / r["wall_s"], 1)
                r["ms_per_doc"] = round(1000 * r["wall_s"] / r["docs_in"], 4)
                r["cpu_ms_per_doc"] = round(1000 * r["cpu_s"] / r["docs_in"], 4)
            if r.get("tokens"):
                r["tokens_per_s"] = round(r["tokens"] / r["wall_s"], 1)
        if r["rc"] != 0 and r["docs_done_at_end"]:
            r["docs_per_s_partial"] = round(r["docs_done_at_end"] / r["wall_s"], 1)
        r["store_bytes"] = du_bytes(sdir / "store")
        r["git"] = entry.get("git_resume", entry["git"])["commit"]
        entry["stages"].append(r)
        log(f"{scale}x: {stage}: rc {r['rc']}, {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mib']:,.0f} MiB, "
            f"{r.get('docs_per_s', 0):,.0f} docs/s, store {r['store_bytes'] / 2**30:.2f} GiB")
        if stage == "dedup" and r["rc"] == 0:
            entry["dedup_quality"] = dedup_quality(scale)
            log(f"{scale}x: dedup quality {entry['dedup_quality']}")
        save()
        if r["rc"] != 0:
            log(f"{scale}x: {stage} failed (rc {r['rc']}{', killed at the budget' if r['killed_at_budget'] else ''}); "
                f"see {r['log']}")
            for later, _, _ in STAGES[[s for s, _, _ in STAGES].index(stage) + 1 :]:
                entry["stages"].append({"stage": later, "skipped": "budget" if r["killed_at_budget"] else "failed"})
            break
    entry["total_s"] = round(time.monotonic() - t_start, 1)
    entry["git_end"] = git_state()
    save()


# --- targets, table, plot ----------------------------------------------------------------------------------------


def _stage(results: dict, scale: int, stage: str) -> dict | None:
    e = results["scales"].get(str(scale))
    for r in (e or {}).get("stages", []):
        if r.get("stage") == stage and r.get("rc") == 0:
            return r
    return None


def evaluate_targets(results: dict) -> list[dict]:
    scales = sorted(int(s) for s in results["scales"])
    hi = max(scales)
    out = []
    for stage, _, in_targets in STAGES:
        if not in_targets:
            continue
        r10, rhi, r1 = _stage(results, 10, stage), _stage(results, 100, stage), _stage(results, 1, stage)
        t = {"stage": stage}
        if rhi:
            t["rss_100x_le_4gib"] = rhi["peak_rss_mib"] <= 4096
        if r10 and rhi:
            t["rss_ratio_100_10"] = round(rhi["peak_rss_mib"] / r10["peak_rss_mib"], 3)
            t["rss_flat_10_100"] = t["rss_ratio_100_10"] <= 1.2
            if r10.get("ms_per_doc") and rhi.get("ms_per_doc"):
                t["time_per_doc_ratio_100_10"] = round(rhi["ms_per_doc"] / r10["ms_per_doc"], 3)
                t["time_per_doc_le_1_2x"] = t["time_per_doc_ratio_100_10"] <= 1.2
            if r10.get("cpu_ms_per_doc") and rhi.get("cpu_ms_per_doc"):  # steadier on a shared CPU
                t["cpu_time_per_doc_ratio_100_10"] = round(rhi["cpu_ms_per_doc"] / r10["cpu_ms_per_doc"], 3)
                t["cpu_time_per_doc_le_1_2x"] = t["cpu_time_per_doc_ratio_100_10"] <= 1.2
        if r1 and r10:  # what is known when 100x did not run: the 1x -> 10x growth
            t["rss_ratio_10_1"] = round(r10["peak_rss_mib"] / r1["peak_rss_mib"], 3)
            if r1.get("ms_per_doc") and r10.get("ms_per_doc"):
                t["time_per_doc_ratio_10_1"] = round(r10["ms_per_doc"] / r1["ms_per_doc"], 3)
        if stage == "dedup":
            for s in scales:
                e, rs = results["scales"][str(s)], _stage(results, s, "dedup")
                if rs and e.get("dedup_memory_gb"):
                    t[f"rss_within_memory_gb_{s}x"] = rs["peak_rss_mib"] <= e["dedup_memory_gb"] * 1024
            q1 = results["scales"].get("1", {}).get("dedup_quality")
            qh = results["scales"].get(str(hi), {}).get("dedup_quality") if hi > 1 else None
            if q1 and qh:
                t[f"recall_fpr_same_{hi}x_vs_1x"] = (abs(q1["recall"] - qh["recall"]) <= 0.01
                                                     and abs(q1["fpr"] - qh["fpr"]) <= 0.01)
        out.append(t)
    return out


def table(results: dict) -> str:
    lines = ["| scale | stage | docs in | wall s | steps span s | CPU s | docs/s | wall ms/doc | CPU ms/doc | "
             "tokens/s | peak RSS MiB (tree) | largest proc MiB | store GiB after |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in sorted(int(k) for k in results["scales"]):
        e = results["scales"][str(s)]
        for r in e["stages"]:
            if "skipped" in r:
                lines.append(f"| {s}x | {r['stage']} | skipped ({r['skipped']}) | | | | | | | | | | |")
                continue
            ok = r.get("rc") == 0
            note = "" if ok else (" (killed at budget)" if r.get("killed_at_budget") else f" (rc {r.get('rc')})")
            docs = f"{r.get('docs_in') or 0:,}" if ok else f"{r.get('docs_done_at_end') or 0:,} done"
            rate = r.get("docs_per_s") if ok else r.get("docs_per_s_partial")
            tps = f"{r['tokens_per_s']:,.0f}" if r.get("tokens_per_s") else ""
            lines.append(
                f"| {s}x | {r['stage']}{note} | {docs} | {r['wall_s']:,.1f} | {r.get('steps_span_s', 0):,.0f} | "
                f"{r['cpu_s']:,.0f} | {rate or 0:,.0f} | {r.get('ms_per_doc') or 0:.3f} | "
                f"{r.get('cpu_ms_per_doc') or 0:.3f} | {tps} | "
                f"{r['peak_rss_mib']:,.0f} | {r['peak_single_rss_mib']:,.0f} | {r['store_bytes'] / 2**30:.2f} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 4))
    for stage, _, _ in STAGES:
        pts = [(s, _stage(results, s, stage)) for s in sorted(int(k) for k in results["scales"])]
        pts = [(s, r) for s, r in pts if r]
        if not pts:
            continue
        xs = [s for s, _ in pts]
        a1.plot(xs, [r["peak_rss_mib"] / 1024 for _, r in pts], marker="o", label=stage)
        if all(r.get("ms_per_doc") for _, r in pts):
            a2.plot(xs, [r["ms_per_doc"] for _, r in pts], marker="o", label=stage)
        if all(r.get("cpu_ms_per_doc") for _, r in pts):
            a3.plot(xs, [r["cpu_ms_per_doc"] for _, r in pts], marker="o", label=stage)
    a1.axhline(4, color="grey", ls="--", lw=0.8)
    for ax, title in ((a1, "peak RSS of the process tree (GiB)"), (a2, "wall time per input document (ms)"),
                      (a3, "CPU time per input document (ms, whole tree)")):
        ax.set_xscale("log")
        ax.set_xlabel("scale (x the demo corpus)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    a2.set_yscale("log")
    a3.set_yscale("log")
    a1.legend(fontsize=7)
    fig.suptitle(f"scale_bench {results['date']}: stages 1-7, one process per stage, {results['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def machine() -> str:
    model = "unknown CPU"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()}-core x86_64 {model}, {mem:.0f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default="1,10,100")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dup-rate", type=float, default=0.02)
    ap.add_argument("--budget-s", type=float, default=1800, help="per scale: generation plus stages")
    ap.add_argument("--date", default=dt.date.today().isoformat())
    ap.add_argument("--merge", action="store_true", help="add to an existing results file of the same date")
    ap.add_argument("--generate-only", action="store_true", help="only build (or check) the corpora")
    ap.add_argument("--stages", default="", help="comma-separated stages to run (default: all)")
    ap.add_argument("--resume", action="store_true",
                    help="keep each scale's store, instance, recipe and other stages' results (implies --merge)")
    ap.add_argument("--results-dir", type=Path, default=RESULTS)
    ap.add_argument("--executor", choices=("local", "dask"), default="",
                    help="run the stages with this executor section in the recipe; dask: on a LocalCluster of "
                    "--dask-workers processes started here; memory and CPU are then those of this process's tree "
                    "(the cluster's workers, nannies and the stage process), for both kinds")
    ap.add_argument("--dask-workers", type=int, default=2)
    ap.add_argument("--report-only", action="store_true", help="only re-evaluate targets, table and plot")
    ap.add_argument("--quality-only", action="store_true",
                    help="only recompute the dedup quality of the scales from their stores (into the results file)")
    args = ap.parse_args()
    args.monitor_root = os.getpid() if args.executor else None
    args.dask_address = ""
    if args.executor == "dask":
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=args.dask_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        args.dask_address = cluster.scheduler_address
    args.merge = args.merge or args.resume
    scales = sorted(int(s) for s in args.scales.split(","))
    out_dir = args.results_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / f"scale_{args.date}.json", out_dir / f"scale_{args.date}.png"
    results = {"date": args.date, "machine": machine(), "command": " ".join([".venv/bin/python", *sys.argv]),
               "note": "CPU shared with other engineers' edits and tests during the run (see load_start/load_end)",
               "scales": {}}
    if args.merge and json_path.exists():
        old = json.loads(json_path.read_text())
        results = {**old, "command": old["command"] + " ; " + results["command"]}

    def save():
        results["targets"] = evaluate_targets(results)
        json_path.write_text(json.dumps(results, indent=1))

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    if args.report_only:
        save()
        plot(results, png_path)
        print(table(results))
        print(json.dumps(results["targets"], indent=1))
        return
    if args.quality_only:
        for scale in scales:
            results["scales"][str(scale)]["dedup_quality"] = q = dedup_quality(scale)
            log(f"{scale}x: dedup quality {q}")
        save()
        return
    if args.generate_only:
        for scale in scales:
            build_corpus(scale, args.seed, args.dup_rate, log)
        return
    classifier_scale = 1 if (1 in scales or (SCALE_DIR / "1x/store/quality_classifier/CURRENT").exists()) else None
    for scale in scales:
        run_scale(scale, args, classifier_scale if classifier_scale != scale else None, results, save, log)
    save()
    plot(results, png_path)
    print(table(results))
    for s in sorted(results["scales"], key=int):
        q = results["scales"][s].get("dedup_quality")
        if q:
            print(f"{s}x dedup: recall {q['recall']} (expected {q['expected_recall_lsh_14x8']}) on "
                  f"{q['eligible_pairs']:,} pairs, FPR {q['fpr']} ({q['unique_docs_removed']:,} of "
                  f"{q['unique_docs_in']:,} unique docs)")
    print(json.dumps(results["targets"], indent=1))
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
