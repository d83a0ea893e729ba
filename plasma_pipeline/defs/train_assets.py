"""Stages 8 and 11: the trainer launched through Dagster Pipes; each finished run becomes a versioned checkpoint asset.

Both assets use the same code path — only the data asset, the recipe section and the starting weights differ —
because pretrain and SFT are the same engine interface with different shards.

The trainer works in a folder keyed by the run's inputs (`<store>/<asset>/work/<fingerprint>/`), so a run that is
terminated from the UI resumes from its last checkpoint when launched again with the same inputs; the published
version holds the final weights, the tokenizer and the run's metrics, and its id is a hash of those files.
"""


import hashlib
import json
import shutil
from pathlib import Path

import dagster as dg

from plasma_pipeline.defs.common import StepInputs, code_version, stage_asset, store_for, version_result
from plasma_pipeline.defs.metadata import model_result_metadata
from plasma_pipeline.defs.launch import launch_trainer
from plasma_pipeline.recipe import Recipe
from plasma_pipeline.shards import file_sha256

GPU_POOL = "gpu"
# What a model version *is*; everything else in it (metrics, run.json) describes how it was made.
MODEL_IDENTITY_FILES = ("model.safetensors", "config.json", "tokenizer.model")


def train_config(recipe: Recipe, section: str, data_dir: Path, out_dir: Path, vocab_size: int, init_from: str = "") -> dict:
    model = dict(recipe.model)
    name = model.pop("name", "toy")
    model.setdefault("vocab_size", vocab_size)
    model.setdefault("max_seq_len", recipe.mix.seq_len)
    settings = dict(recipe.pretrain if section == "pretrain" else recipe.sft)
    return {
        **settings,
        "model": name,
        "model_overrides": model,
        "data_dir": str(data_dir),
        "out_dir": str(out_dir),
        "init_from": init_from,
    }


def _read_metrics(out_dir: Path) -> list[dict]:
    f = out_dir / "metrics.jsonl"
    if not f.exists():
        return []
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def _metrics_tail(rows: list[dict]) -> dict:
    train_rows = [r for r in rows if "loss" in r]
    last = dict(train_rows[-1]) if train_rows else {}
    val = [r for r in rows if "val_loss" in r]
    if val:
        last["val_loss"] = val[-1]["val_loss"]
    if train_rows:
        last["first_loss"] = train_rows[0]["loss"]
    return last


def training_asset(
    recipe: Recipe, key: str, section: str, data_key: str, init_key: str | None, description: str
) -> dg.AssetsDefinition:
    group = section  # one group per stage: "pretrain" (stage 8), "sft" (stage 11)
    deps = [data_key, "tokenizer"] + ([init_key] if init_key else [])

    @stage_asset(
        recipe, key, section=section, group=group, deps=deps, kinds={"pytorch", "safetensors"},
        description=description, automated=False, pool=GPU_POOL,
    )
    def _train(context: dg.AssetExecutionContext, pipes: dg.PipesSubprocessClient) -> dg.MaterializeResult:
        store = store_for(recipe)
        with StepInputs(context, store) as inputs:
            data, tok = inputs.get(data_key), inputs.get("tokenizer")
            init = inputs.get(init_key) if init_key else None
            return _train_and_publish(context, pipes, store, inputs, data, tok, init)

    def _train_and_publish(context, pipes, store, inputs: StepInputs, data, tok, init) -> dg.MaterializeResult:
        import sentencepiece as spm

        vocab = spm.SentencePieceProcessor(model_file=str(tok.file("tokenizer.model"))).get_piece_size()
        fp_inputs = {"code": code_version(recipe, section), "data": data.id, "tok": tok.id, "init": init.id if init else ""}
        fingerprint = hashlib.sha256(json.dumps(fp_inputs, sort_keys=True).encode()).hexdigest()[:16]
        # The work dir pins the versions it was keyed on until its result is published, so retention keeps
        # what a resumable run needs even when the step is gone.
        work = store.work_dir(key, fingerprint, dict(inputs.versions))
        cfg = train_config(recipe, section, data.path, work, vocab, str(init.path) if init else "")
        run_json = work / "run.json"
        run_json.write_text(json.dumps(cfg, indent=1))
        context.log.info(f"training {key} in {work} (resumes from its last checkpoint if one exists)")
        # Where it trains is the recipe's `launcher:` (defs/launch.py): this process's child by default.
        invocation = launch_trainer(context, recipe.launchers.get(section), pipes, str(run_json),
                                    extras={"asset": key, "data_version": data.id})
        # The trainer reports one materialization (its summary); its metadata joins the published version's.
        trainer_meta = dict(invocation.get_materialize_result().metadata or {})
        final = work / "final"
        if not (final / "model.safetensors").exists():
            raise RuntimeError(f"trainer finished without writing {final}/model.safetensors")
        with store.writer(key) as w:
            for f in final.iterdir():
                if f.is_file():
                    shutil.copy2(f, w.dir / f.name)
            shutil.copy2(tok.file("tokenizer.model"), w.dir / "tokenizer.model")
            if (work / "metrics.jsonl").exists():
                shutil.copy2(work / "metrics.jsonl", w.dir / "metrics.jsonl")
            (w.dir / "run.json").write_text(json.dumps(cfg, indent=1))
            # The version id is the model itself (weights, shape, tokenizer); logs and timings ride along as annex
            # files, so a resumed run with identical weights publishes the same id as an uninterrupted one.
            w.annex.update(p.name for p in w.dir.iterdir() if p.name not in MODEL_IDENTITY_FILES)
            rows = _read_metrics(work)
            # The trainer hashed the weights it wrote; hashing a multi-GB file again here would only repeat it.
            reported = trainer_meta.get("weights_sha256")
            weights_sha = reported.value if reported is not None else file_sha256(w.dir / "model.safetensors")
            w.metadata.update(
                {
                    "weights_sha256": weights_sha,
                    "train_data_version": data.id,
                    "tokenizer_version": tok.id,
                    "init_from_version": init.id if init else "",
                    "work_dir": str(work),
                    "final_metrics": _metrics_tail(rows),
                }
            )
            w.inputs.update(inputs.versions)
            version = w.publish()
        store.mark_work_published(work, version.id)
        extra = model_result_metadata(version.path, key, data.path, recipe.evaluation, trainer_meta, context.log.warning)
        return version_result(version, key, extra=extra, inputs=inputs.versions, kind="model")

    return _train


def training_assets(recipe: Recipe) -> list[dg.AssetsDefinition]:
    return [
        training_asset(
            recipe, "base_model", "pretrain", "pretrain_shards", None,
            "Stage 8: pretraining by the streaming-offload trainer; data version = hash of the weights.",
        ),
        training_asset(
            recipe, "chat_model", "sft", "sft_shards", "base_model",
            "Stage 11: SFT by the same trainer, from the pinned base_model version.",
        ),
    ]
