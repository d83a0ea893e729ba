"""Stages 9, 10 and 12: instruction data, SFT shards with loss masks, and the evaluation report."""


import dagster as dg

from plasma_pipeline.defs.common import (
    StepInputs,
    stage_asset,
    store_for,
    version_result,
)
from plasma_pipeline.defs.metadata import embed_images, png_markdown, token_decoder
from plasma_pipeline.recipe import Recipe

CHECK_BPB = "bits_per_byte_not_regressed"


def instructions_asset(recipe: Recipe) -> dg.AssetsDefinition:
    from plasma_pipeline.instruct import build_instructions

    cfg = recipe.instructions
    feeding = [s for s in recipe.sources if cfg.domain_of(s) in cfg.generators]

    @stage_asset(
        recipe,
        "instructions",
        section="instructions",
        group="instructions",
        # The deduped documents: cleaned, scored, deduplicated and with the eval battery held out.
        deps=["deduped"],
        kinds={"parquet"},
        description="Stage 9: templated instructions and chats from the filtered (deduped) documents of the "
                    "structured sources, decontaminated against the eval battery.",
    )
    def instructions(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        store = store_for(recipe)
        with StepInputs(context, store) as inputs, store.writer("instructions") as w:
            deduped = inputs.get("deduped")
            tables = {s: deduped.iter_tables(split=s) for s in feeding}
            for table in build_instructions(cfg, w.stats, tables, input_name="deduped_docs", file_fallback=False):
                w.write(table)
            w.inputs.update(inputs.versions)
            version = w.publish()
        return version_result(version, "instructions", inputs=inputs.versions)

    return instructions


def sft_shards_asset(recipe: Recipe) -> dg.AssetsDefinition:
    from plasma_pipeline.instruct import build_sft_shards

    @stage_asset(
        recipe,
        "sft_shards",
        section="sft_shards",
        group="sft_shards",
        deps=["instructions", "tokenizer"],
        kinds={"parquet"},
        description="Stage 10: chats rendered with the chat template; only assistant tokens are trained.",
    )
    def sft_shards(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        store = store_for(recipe)
        with StepInputs(context, store) as inputs, store.writer("sft_shards") as w:
            ins, tok = inputs.get("instructions"), inputs.get("tokenizer")
            meta = build_sft_shards(
                ins.iter_tables(), str(tok.file("tokenizer.model")), recipe.sft_shards,
                w.writer_for("train"), w.writer_for("val"), w.stats,
            )
            w.metadata.update(meta)
            w.metadata["tokenizer_version"] = tok.id
            w.inputs.update(inputs.versions)
            version = w.publish()
            decode = token_decoder(tok.file("tokenizer.model"))
        return version_result(version, "sft_shards", inputs=inputs.versions, decode=decode)

    return sft_shards


STATS_ASSETS_PREFIXES = ("raw", "clean", "scored")


def evaluation_asset(recipe: Recipe) -> dg.AssetsDefinition:
    import json

    from pathlib import Path

    from plasma_pipeline.evaluate import CHECK_NAMES, models_from_store, run_evaluation
    from plasma_pipeline.instruct import eval_prompts

    cfg = recipe.evaluation
    bpb_checks = [
        dg.AssetCheckSpec(name, asset="evaluation",
                          description=f"{label} model: val bits-per-byte per domain has not regressed past "
                                      f"+{cfg.bpb_regression_threshold:.0%} of the previous evaluation with the same tokenizer and val data")
        for label, name in CHECK_NAMES.items()
    ]

    @stage_asset(
        recipe,
        "evaluation",
        section="evaluation",
        group="evaluation",
        # Only the models: their val data comes through their own lineage, so a data change without retraining
        # leaves the evaluation fresh, and a retrain runs it once, after the models.
        deps=["base_model", "chat_model"],
        kinds={"pytorch"},
        description="Stage 12: val loss and bits-per-byte per domain, a prompt battery, and a report card.",
        automated=False,
        extra_checks=[*bpb_checks],
    )
    def evaluation(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        store = store_for(recipe)
        with StepInputs(context, store) as inputs, store.writer("evaluation") as w:
            base, chat = inputs.get("base_model"), inputs.get("chat_model")
            # Each model is scored on the val data of its own lineage; lease those versions for the step.
            models = models_from_store(store, base.id, chat.id)
            for spec in models.values():
                for d in spec["val"].values():
                    inputs.pin(Path(d).parent.parent.name, Path(d).name, record=False)
            stage_stats = {}
            for s in recipe.sources:
                for prefix in STATS_ASSETS_PREFIXES:
                    stage_stats[f"{prefix}/{s}"] = store.current(f"{prefix}/{s}").stats
            for key in ("deduped", "instructions"):
                stage_stats[key] = store.current(key).stats
            try:
                previous = json.loads(store.current("evaluation").file("metrics.json").read_text())
            except FileNotFoundError:
                previous = None
            prompts = eval_prompts(recipe.instructions.sources_root, per_domain=recipe.instructions.eval_per_domain)
            context.log.info(f"evaluating base {base.id} and chat {chat.id} on {len(prompts)} prompts, each on the "
                             f"val data of its own lineage")
            out = run_evaluation(models=models, prompts=prompts, stage_stats=stage_stats, cfg=cfg,
                                 out_dir=w.dir, previous=previous, stats=w.stats)
            w.metadata.update(out["metadata"])
            w.inputs.update(inputs.versions)
            version = w.publish()
        report_path = version.path / "report.md"
        context.log.info(f"report card: {report_path}")
        checks = [
            dg.AssetCheckResult(
                check_name=name, asset_key="evaluation", passed=bool(c["passed"]),
                severity=dg.AssetCheckSeverity.ERROR, description=c["description"],
                metadata={"details": dg.MetadataValue.json(json.loads(json.dumps(c["metadata"], default=str)))},
            )
            for name, c in out["checks"].items()
        ]
        # The UI cannot fetch the report's relative loss.png / drops.png: the plots travel inside the markdown.
        extra = {
            "report_path": dg.MetadataValue.path(str(report_path)),
            "report": dg.MetadataValue.md(embed_images(report_path.read_text(encoding="utf-8"), version.path)),
            "loss_curves": png_markdown((version.path / "loss.png").read_bytes(), "loss curves"),
            "drops_plot": png_markdown((version.path / "drops.png").read_bytes(), "drops per stage and rule"),
        }
        return version_result(version, "evaluation", extra=extra, checks=checks, kind="evaluation")

    return evaluation


def chat_assets(recipe: Recipe) -> list[dg.AssetsDefinition]:
    return [instructions_asset(recipe), sft_shards_asset(recipe), evaluation_asset(recipe)]
