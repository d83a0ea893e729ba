"""The whole pipeline on a tiny recipe over the real offline corpora, through the real Dagster CLI and instance.

One module-scoped run keeps the suite fast: `dagster asset materialize --select '*'` materializes all twelve
stages into a persistent instance; then the mix is edited and `plasma materialize --stale` must run exactly
`pretrain_shards` and what is downstream of it, as the instance's event log shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from plasma_pipeline.recipe import REPO_ROOT
from plasma_pipeline_tests.conftest import project_instance

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ALL_STAGE_KEYS = {
    "quality_classifier", "toxicity_classifier", "deduped", "tokenizer", "pretrain_shards", "base_model",
    "instructions", "sft_shards", "chat_model", "evaluation",
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, offline_sources):
    project = project_instance(tmp_path_factory.mktemp("e2e"))
    # The tightest retention: every version that survives does so because something pins it.
    raw = yaml.safe_load(project["recipe"].read_text())
    raw["store"]["keep_versions"] = 1
    project["recipe"].write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "plasma_pipeline.definitions", "--select", "*"],
        env=project["env"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    return {**project, "log": proc.stderr}


def _instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


def test_all_twelve_stages_materialize_with_the_dagster_cli(pipeline):
    instance = _instance(pipeline["home"])
    keys = {k.to_user_string() for k in instance.get_asset_keys()}
    for s in ("wiki", "recipes", "code", "dialog", "literature"):
        assert {f"raw/{s}", f"clean/{s}", f"scored/{s}"} <= keys
    assert ALL_STAGE_KEYS <= keys
    # Data versions are the manifest hashes of the published versions.
    store = pipeline["store"]
    for key in ("clean/wiki", "deduped", "pretrain_shards", "base_model"):
        ev = instance.get_latest_materialization_event(dg.AssetKey.from_user_string(key))
        tags = ev.asset_materialization.tags
        current = (store / key / "CURRENT").read_text().strip()
        assert tags["dagster/data_version"] == current, key


def test_stage_counters_and_checks_are_recorded(pipeline):
    instance = _instance(pipeline["home"])
    ev = instance.get_latest_materialization_event(dg.AssetKey(["clean", "wiki"]))
    md = ev.asset_materialization.metadata
    assert md["rows"].value > 0
    # the non-zero drop rules, largest first, e.g. French docs dropped by language ID
    assert md["drops"].value.startswith("| rule | documents | characters |")
    assert md["drops_plot"].value.startswith("![documents dropped per rule](data:image/png;base64,")
    assert 0 < md["kept_share"].value < 1 and md["dropped"].value > 0
    manifest = json.loads((pipeline["store"] / "clean" / "wiki" / "versions" / md["version"].value / "manifest.json").read_text())
    assert any(k.startswith("dropped/lang") for k in manifest["stats"]), manifest["stats"]
    assert "| id |" in md["sample"].value


def _status(pipeline) -> list[str]:
    """`plasma status` as (state, asset, why) per line, or ["everything is fresh"]."""
    proc = subprocess.run([str(BIN / "plasma"), "status"], env=pipeline["env"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if proc.stdout.strip() == "everything is fresh":
        return ["everything is fresh"]
    return [tuple(line.split(None, 2)) for line in proc.stdout.splitlines() if line.strip()]


def test_a_clean_threshold_changes_only_that_sources_clean_code_version(pipeline):
    original = pipeline["recipe"].read_text()
    assert _status(pipeline) == ["everything is fresh"]
    raw = yaml.safe_load(original)
    raw["sources"]["wiki"]["clean"]["min_words"] = 27
    pipeline["recipe"].write_text(yaml.safe_dump(raw))
    try:
        status = _status(pipeline)
        # the changed slice, then the whole downstream closure, each with why
        assert status[0][:2] == ("stale", "clean/wiki") and "recipe slice `sources.wiki.clean` changed" in status[0][2]
        from plasma_pipeline.defs import build_defs
        from plasma_pipeline.recipe import load_recipe

        graph = build_defs(load_recipe(pipeline["recipe"])).resolve_asset_graph()
        below = dg.AssetSelection.assets(dg.AssetKey(["clean", "wiki"])).downstream().resolve(graph)
        assert {a for st, a, _ in status[1:]} == {k.to_user_string() for k in below} - {"clean/wiki"}, status
        assert {"scored/wiki", "deduped", "base_model", "evaluation"} <= {a for _, a, _ in status}
        assert all(st == "follows" for st, _, _ in status[1:]), status

        instance = _instance(pipeline["home"])
        defs = build_defs(load_recipe(pipeline["recipe"]))
        graph = defs.resolve_asset_graph()
        changed = set()
        for key in graph.materializable_asset_keys:
            ev = instance.get_latest_materialization_event(key)
            if ev.asset_materialization.tags.get("dagster/code_version") != graph.get(key).code_version:
                changed.add(key.to_user_string())
        assert changed == {"clean/wiki"}
    finally:
        pipeline["recipe"].write_text(original)


def test_editing_the_mix_reruns_only_pretrain_shards_and_downstream(pipeline):
    instance = _instance(pipeline["home"])
    before = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("evaluation")), limit=1
    ).records[0].storage_id
    raw = yaml.safe_load(pipeline["recipe"].read_text())
    raw["mix"]["weights"]["wiki"] = raw["mix"]["weights"]["wiki"] * 3
    pipeline["recipe"].write_text(yaml.safe_dump(raw))

    status = _status(pipeline)
    assert status[0][:2] == ("stale", "pretrain_shards") and "recipe slice `mix` changed" in status[0][2]
    assert [a for _, a, _ in status[1:]] == ["base_model", "chat_model", "evaluation"], status
    assert "--with-training" in status[1][2]

    plan = subprocess.run([str(BIN / "plasma"), "materialize", "--stale", "--with-training", "--dry-run"],
                          env=pipeline["env"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0 and "would run" in plan.stdout, plan.stdout + plan.stderr[-2000:]
    assert [line.split()[1] for line in plan.stdout.splitlines()[1:]] == [
        "pretrain_shards", "base_model", "chat_model", "evaluation"], plan.stdout
    assert _status(pipeline)[0][:2] == ("stale", "pretrain_shards")  # the dry run ran nothing

    proc = subprocess.run([str(BIN / "plasma"), "materialize", "--stale", "--with-training"], env=pipeline["env"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    instance = _instance(pipeline["home"])
    ran = set()
    for key in instance.get_asset_keys():
        recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=100).records
        if any(r.storage_id > before for r in recs):
            ran.add(key.to_user_string())
    assert ran == {"pretrain_shards", "base_model", "chat_model", "evaluation"}, ran

    again = subprocess.run([str(BIN / "plasma"), "materialize", "--stale", "--with-training"], env=pipeline["env"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "nothing was stale" in again.stdout, again.stdout + again.stderr[-2000:]


def _trainer_processes(run_json: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"plasma_pipeline.train" in cmd and str(run_json).encode() in cmd:
                pids.append(int(proc.name))
    return pids


def test_interrupting_a_training_run_keeps_its_checkpoint_and_the_next_launch_resumes(pipeline):
    """What "Terminate" in the UI does: the run process is interrupted, Pipes forwards SIGINT to the trainer,
    which checkpoints at the step boundary and exits; launching again with the same inputs resumes."""
    import signal
    import time

    from plasma_pipeline.train.checkpoint import list_checkpoints

    raw = yaml.safe_load(pipeline["recipe"].read_text())
    raw["pretrain"].update(steps=400, save_every=4, log_every=20)
    pipeline["recipe"].write_text(yaml.safe_dump(raw))
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "plasma_pipeline.definitions", "--select", "base_model"]
    work_root = pipeline["store"] / "base_model" / "work"
    before = set(work_root.iterdir())
    proc = subprocess.Popen(cmd, env=pipeline["env"], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    work = None
    while time.time() < deadline and proc.poll() is None:
        new = [d for d in work_root.iterdir() if d not in before]
        if new and list_checkpoints(new[0]):
            work = new[0]
            break
        time.sleep(0.2)
    assert work is not None, "no checkpoint appeared: " + (proc.communicate()[1][-3000:] if proc.poll() is not None else "")
    proc.send_signal(signal.SIGINT)  # the run process only, as the run launcher's terminate does
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, "the interrupted run reported success"
    assert not _trainer_processes(work / "run.json"), "the trainer outlived its run"
    saved = list_checkpoints(work)
    assert saved, "the last checkpoint did not survive"
    assert not (work / "final" / "model.safetensors").exists() or saved[-1][0] < 400

    again = subprocess.run(cmd, env=pipeline["env"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "resuming from" in again.stderr, again.stderr[-4000:]
    assert (work / "final" / "model.safetensors").exists()

    # The same inputs trained without interruption publish the very same version id.
    resumed = (pipeline["store"] / "base_model" / "CURRENT").read_text().strip()
    import shutil

    shutil.rmtree(work)
    fresh = subprocess.run(cmd, env=pipeline["env"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-4000:]
    assert "resuming from" not in fresh.stderr
    assert (pipeline["store"] / "base_model" / "CURRENT").read_text().strip() == resumed


def _current(pipeline, asset: str) -> str:
    return (pipeline["store"] / asset / "CURRENT").read_text().strip()


def _manifest(pipeline, asset: str, version: str) -> dict:
    return json.loads((pipeline["store"] / asset / "versions" / version / "manifest.json").read_text())


def test_republishing_pretrain_shards_while_base_model_trains_keeps_the_data_it_reads(pipeline):
    """keep_versions 1: a new pretrain_shards version is published mid-training; the one being read survives."""
    import time

    from plasma_pipeline.train.checkpoint import list_checkpoints

    original = pipeline["recipe"].read_text()
    try:
        raw = yaml.safe_load(original)
        raw["pretrain"].update(steps=300, save_every=10, log_every=50, seed=7)
        pipeline["recipe"].write_text(yaml.safe_dump(raw))
        reading = _current(pipeline, "pretrain_shards")
        work_root = pipeline["store"] / "base_model" / "work"
        before = set(work_root.iterdir())
        cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "plasma_pipeline.definitions", "--select", "base_model"]
        train = subprocess.Popen(cmd, env=pipeline["env"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while time.time() < deadline and train.poll() is None:
            new = [d for d in work_root.iterdir() if d not in before]
            if new and list_checkpoints(new[0]):
                break
            time.sleep(0.2)
        assert train.poll() is None, "training ended before the republish: " + train.communicate()[1][-3000:]
        raw["mix"]["weights"]["code"] = raw["mix"]["weights"]["code"] * 2  # different shards
        pipeline["recipe"].write_text(yaml.safe_dump(raw))
        pub = subprocess.run([str(BIN / "plasma"), "materialize", "--select", "pretrain_shards"], env=pipeline["env"],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        assert pub.returncode == 0, pub.stderr[-4000:]
        assert _current(pipeline, "pretrain_shards") != reading
        assert (pipeline["store"] / "pretrain_shards" / "versions" / reading / "manifest.json").exists()
        out, err = train.communicate(timeout=600)
        assert train.returncode == 0, err[-4000:]
        model = _current(pipeline, "base_model")
        assert _manifest(pipeline, "base_model", model)["inputs"]["pretrain_shards"] == reading
        # The model's current version still pins what it was trained on.
        assert (pipeline["store"] / "pretrain_shards" / "versions" / reading).exists()
    finally:
        pipeline["recipe"].write_text(original)


def test_rematerializing_base_model_keeps_the_version_chat_model_was_trained_from(pipeline):
    original = pipeline["recipe"].read_text()
    try:
        chat = _current(pipeline, "chat_model")
        trained_from = _manifest(pipeline, "chat_model", chat)["inputs"]["base_model"]
        raw = yaml.safe_load(original)
        raw["pretrain"].update(steps=5, seed=11)  # different weights
        pipeline["recipe"].write_text(yaml.safe_dump(raw))
        proc = subprocess.run([str(BIN / "plasma"), "materialize", "--select", "pretrain_shards", "base_model"],
                              env=pipeline["env"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert _current(pipeline, "base_model") != trained_from
        kept = pipeline["store"] / "base_model" / "versions" / trained_from
        assert (kept / "manifest.json").exists() and (kept / "model.safetensors").exists()
    finally:
        pipeline["recipe"].write_text(original)


def test_the_eval_battery_is_held_out_of_the_pretrain_and_sft_data(pipeline):
    """The battery's documents never reach the pretraining shards or the instructions: the deduped documents that
    pretrain_shards packed hold no battery text, the decoded token shards hold none of its long references'
    13-grams, and the instructions were built from those deduped documents."""
    import pyarrow.parquet as pq
    import sentencepiece as spm

    from plasma_pipeline.instruct.decontaminate import ngrams, words
    from plasma_pipeline.instruct.eval_prompts import to_eval_prompt
    from plasma_pipeline.instruct.holdout import battery_items, item_spans
    from plasma_pipeline.recipe import load_recipe

    store = pipeline["store"]
    items = battery_items(load_recipe(pipeline["recipe"]).instructions)
    pre = _manifest(pipeline, "pretrain_shards", _current(pipeline, "pretrain_shards"))
    deduped = _manifest(pipeline, "deduped", pre["inputs"]["deduped"])
    assert deduped["stats"]["dropped/eval_holdout"] > 0, deduped["stats"]
    held = deduped["metadata"]["eval_holdout"]
    assert held["battery_items"] == len(items) and held["documents_dropped"] == len(held["dropped"]) > 0

    # The documents pretrain_shards read: no battery text of 8 words or more stands in any of them.
    texts = [" ".join(words(t)) for it in items for t in item_spans(it) + [to_eval_prompt(it)["reference"]]]
    texts = [t for t in texts if len(t.split()) >= 8]
    base = store / "deduped" / "versions" / deduped["version"]
    dropped_ids = {d["id"] for d in held["dropped"]}
    docs = []
    for s in deduped["shards"]:
        t = pq.read_table(base / s["path"], columns=["id", "text"])
        assert not dropped_ids & set(t["id"].to_pylist())
        docs += [" ".join(words(x)) for x in t["text"].to_pylist()]
    corpus = " | " + " | ".join(docs) + " | "
    assert [t for t in texts if f" {t} " in corpus] == []

    # The token shards, decoded row by row with their tokenizer: no 13-gram of a prose reference. (Not recipes
    # and code: other recipes and modules share whole steps and lines with them, "stir in the minced garlic and
    # grated ginger and cook for another minute", without being the battery's documents.)
    tok = store / "tokenizer" / "versions" / pre["metadata"]["tokenizer_version"] / "tokenizer.model"
    sp = spm.SentencePieceProcessor(model_file=str(tok))
    grams = set()
    for it in items:
        if it["domain"] in ("wiki", "literature", "dialog"):
            grams |= ngrams(words(to_eval_prompt(it)["reference"]), 13)
    assert grams
    rows = 0
    for s in pre["shards"]:
        for ids in pq.read_table(store / "pretrain_shards" / "versions" / pre["version"] / s["path"],
                                 columns=["input_ids"])["input_ids"].to_pylist():
            rows += 1
            assert not ngrams(words(sp.decode([i for i in ids if i > 3])), 13) & grams
    assert rows > 0

    # SFT: the instructions were built from those deduped documents, not from raw.
    ins = _manifest(pipeline, "instructions", _current(pipeline, "instructions"))
    assert ins["inputs"] == {"deduped": deduped["version"]}
    assert ins["stats"]["input/deduped_docs"] > 0
    assert sum(v for k, v in ins["stats"].items() if k.startswith("from_source/")) == ins["stats"]["kept"]
    sft = _manifest(pipeline, "sft_shards", _current(pipeline, "sft_shards"))
    assert sft["inputs"]["instructions"] == ins["version"]


def test_the_gpu_steps_run_from_a_bundle_in_a_checkout_without_the_corpus(pipeline, tmp_path):
    """benchmarks/gpu_bundle.py, the real run's way onto a GPU host that has no corpus: in a checkout with no data/
    and a store at another path, the definitions refuse to load until the bundle is unpacked, then base_model
    trains from the bundle alone through the Dagster CLI."""
    import shutil

    def py(*args, **kw):
        return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=600, **kw)

    bundle = tmp_path / "bundle.tar.gz"
    p = py(REPO_ROOT / "benchmarks" / "gpu_bundle.py", "pack", "--recipe", pipeline["recipe"], "--out", bundle,
           env=pipeline["env"], cwd=REPO_ROOT)
    assert p.returncode == 0, p.stderr[-3000:]

    tree = tmp_path / "tree"
    shutil.copytree(REPO_ROOT / "plasma_pipeline", tree / "plasma_pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "benchmarks").mkdir()
    shutil.copy2(REPO_ROOT / "benchmarks" / "gpu_bundle.py", tree / "benchmarks")
    raw = yaml.safe_load(pipeline["recipe"].read_text())
    raw["store"]["root"] = str(tmp_path / "store2")
    recipe = tmp_path / "gpu-host.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy2(REPO_ROOT / "dagster.yaml", home)
    env = {**pipeline["env"], "PYTHONPATH": str(tree), "PLASMA_RECIPE": str(recipe), "DAGSTER_HOME": str(home)}

    p = py("-c", "import plasma_pipeline.definitions", env=env, cwd=tree)
    assert p.returncode != 0 and "offline corpus" in p.stderr and str(tree) in p.stderr, p.stderr[-2000:]

    p = py(tree / "benchmarks" / "gpu_bundle.py", "unpack", "--recipe", recipe, "--bundle", bundle, env=env, cwd=tree)
    assert p.returncode == 0, p.stderr[-3000:]
    proc = subprocess.run([str(BIN / "dagster"), "asset", "materialize", "-m", "plasma_pipeline.definitions",
                           "--select", "base_model"], env=env, cwd=tree, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    version = (tmp_path / "store2" / "base_model" / "CURRENT").read_text().strip()
    run = json.loads((tmp_path / "store2" / "base_model" / "versions" / version / "run.json").read_text())
    shards = (tmp_path / "store2" / "pretrain_shards" / "CURRENT").read_text().strip()
    assert run["data_dir"] == str(tmp_path / "store2" / "pretrain_shards" / "versions" / shards)
    assert shards == (pipeline["store"] / "pretrain_shards" / "CURRENT").read_text().strip()
