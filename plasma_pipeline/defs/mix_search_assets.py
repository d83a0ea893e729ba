"""The mixture search as Dagster assets: one static partition per variant, so each runs, fails and reruns alone.

    mix_search/variant        observable source, per variant: data version = fingerprint of its weights
    mix_search/val_set        the fixed val set (every domain's held-out documents, tokenized once)
    mix_search/proxy_shards   per variant: the mix stage's train shards at the variant's weights
    mix_search/proxy_model    per variant: the trainer on them, then per-domain val bpb on the fixed val set
    mix_search/report         table, plots, regressions and the suggested mix

A variant's weights are not in any code version (that would make every partition stale at once); they are the
per-partition data version of `mix_search/variant`, which `plasma mix-search` observes before it runs, so editing
one variant makes only its partition unsynced, and then its model and the report. Each partition publishes its
own store asset (`mix_search/proxy_shards/<variant>`, `mix_search/proxy_model/<variant>`).
"""

import hashlib
import json
import shutil

import dagster as dg

from plasma_pipeline.defs.common import IMPL_VERSION, StepInputs, store_for, version_result
from plasma_pipeline.defs.launch import launch_trainer
from plasma_pipeline.defs.metadata import embed_images, png_markdown
from plasma_pipeline.recipe import Recipe

GROUP = "mix_search"
GPU_POOL = "gpu"  # the proxies train one at a time, like base_model and chat_model
IMPL = "1"
VARIANT = dg.AssetKey(["mix_search", "variant"])
VAL_SET = dg.AssetKey(["mix_search", "val_set"])
SHARDS = dg.AssetKey(["mix_search", "proxy_shards"])
MODEL = dg.AssetKey(["mix_search", "proxy_model"])
REPORT = dg.AssetKey(["mix_search", "report"])
PARTITIONED = (SHARDS, MODEL)
IDENTITY_FILES = ("model.safetensors", "config.json")


def domains_of(recipe: Recipe) -> list[str]:
    return sorted(recipe.sources)


def variants_of(recipe: Recipe) -> dict[str, dict[str, float]]:
    from plasma_pipeline.mix_search.variants import variant_weights

    return variant_weights(recipe.mix_search, recipe.mix.weights, domains_of(recipe))


def store_asset(key: dg.AssetKey, partition: str) -> str:
    return f"{key.to_user_string()}/{partition}"


def _hash(*parts) -> str:
    blob = json.dumps([IMPL, IMPL_VERSION["mix"], *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _mix_settings(recipe: Recipe) -> dict:
    """The mix stage's settings that shape val and packing, but not the weights or the budget."""
    m = recipe.mix
    return {"seed": m.seed, "seq_len": m.seq_len, "val_fraction": m.val_fraction,
            "val_max_tokens_per_domain": m.val_max_tokens_per_domain, "max_epochs": m.max_epochs,
            "rows_per_shard": m.rows_per_shard}


def code_versions(recipe: Recipe) -> dict[dg.AssetKey, str]:
    cfg = recipe.mix_search
    proxy = {k: getattr(cfg, k) for k in ("model", "tokens_per_variant", "batch_size", "lr", "warmup", "engine",
                                          "seed", "val_max_rows")}
    search = {k: getattr(cfg, k) for k in ("objective", "lightgbm_min_variants", "candidates", "top_k")}
    return {
        VAL_SET: _hash("val_set", _mix_settings(recipe), domains_of(recipe)),
        SHARDS: _hash("shards", _mix_settings(recipe), cfg.tokens_per_variant),
        MODEL: _hash("model", proxy, recipe.mix.seq_len),
        REPORT: _hash("report", search, cfg.sample, recipe.mix.weights, recipe.mix.total_tokens,
                      recipe.mix.max_epochs),
    }


def recorded_partition_version(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> str | None:
    """The data version (= store version id) of the latest materialization of one partition."""
    recs = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    if not recs or recs[0].asset_materialization is None:
        return None
    return (recs[0].asset_materialization.tags or {}).get("dagster/data_version")


def _pin_partition(inputs: StepInputs, key: dg.AssetKey, partition: str):
    vid = recorded_partition_version(inputs.context.instance, key, partition)
    if vid is None:
        raise FileNotFoundError(f"{key.to_user_string()} has no materialization for variant {partition!r}; "
                                "materialize that partition first")
    return inputs.pin(store_asset(key, partition), vid)


def _domain_paths(deduped, recipe: Recipe) -> dict:
    return {s: (lambda s=s: deduped.shards(split=s)) for s in domains_of(recipe)}


def mix_search_assets(recipe: Recipe) -> list:
    """The search's assets; none when the recipe has no `mix_search:` section."""
    if recipe.mix_search is None:
        return []
    from plasma_pipeline.mix_search.variants import variant_version

    cfg = recipe.mix_search
    variants = variants_of(recipe)
    partitions = dg.StaticPartitionsDefinition(list(variants))
    cv = code_versions(recipe)

    @dg.observable_source_asset(
        key=VARIANT, partitions_def=partitions, group_name=GROUP,
        description="One mixture per partition (the recipe's mix, the listed variants, Dirichlet samples); its "
                    "data version is the fingerprint of the weights, so editing one variant touches one partition.",
    )
    def variant(context):
        return dg.DataVersionsByPartition({p: dg.DataVersion(variant_version(w)) for p, w in variants.items()})

    @dg.asset(
        key=VAL_SET, deps=["deduped", "tokenizer"], group_name=GROUP, code_version=cv[VAL_SET], kinds={"parquet"},
        description="The fixed val set every proxy is scored on: each domain's held-out documents (the mix "
                    "stage's val split, chosen by id hash), tokenized once; it does not depend on any mix.",
    )
    def val_set(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from plasma_pipeline.mix_search.proxy import build_val_set

        store = store_for(recipe)
        name = VAL_SET.to_user_string()
        with StepInputs(context, store) as inputs, store.writer(name) as w, store.scratch(name) as work:
            deduped, tok = inputs.get("deduped"), inputs.get("tokenizer")
            meta = build_val_set(_domain_paths(deduped, recipe), str(tok.file("tokenizer.model")), recipe.mix,
                                 w.writer_for("val"), w.stats, work_dir=work, processes=recipe.store.workers)
            w.metadata.update({"val_tokens_per_domain": meta["val_tokens_per_domain"], "tokenizer_version": tok.id})
            w.inputs.update(inputs.versions)
            version = w.publish()
        return version_result(version, VAL_SET, inputs=inputs.versions)

    @dg.asset(
        key=SHARDS, deps=[VARIANT, "deduped", "tokenizer"], partitions_def=partitions, group_name=GROUP,
        code_version=cv[SHARDS], kinds={"parquet"},
        description="Per variant: the mix stage's train shards at that variant's weights, with the search's "
                    "token budget per variant.",
    )
    def proxy_shards(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from plasma_pipeline.mix_search.proxy import build_variant_shards

        p = context.partition_key
        store = store_for(recipe)
        name = store_asset(SHARDS, p)
        with StepInputs(context, store) as inputs, store.writer(name) as w, store.scratch(name) as work:
            deduped, tok = inputs.get("deduped"), inputs.get("tokenizer")
            meta = build_variant_shards(_domain_paths(deduped, recipe), str(tok.file("tokenizer.model")), recipe.mix,
                                        cfg, variants[p], w.writer_for("train"), w.stats, work_dir=work,
                                        processes=recipe.store.workers)
            w.metadata.update({k: meta[k] for k in ("variant_weights", "token_shares", "available_tokens")})
            w.metadata["tokenizer_version"] = tok.id
            w.inputs.update(inputs.versions)
            version = w.publish()
        context.log.info(f"variant {p}: token shares " + ", ".join(f"{d} {s:.3f}" for d, s in meta["token_shares"].items()))
        return version_result(version, SHARDS, inputs=inputs.versions)

    @dg.asset(
        key=MODEL, deps=[SHARDS, VAL_SET, "tokenizer"], partitions_def=partitions, group_name=GROUP,
        code_version=cv[MODEL], kinds={"pytorch", "safetensors"}, pool=GPU_POOL,
        description="Per variant: a proxy model (the search's small shape) trained on its shards by the trainer, "
                    "then per-domain val bits-per-byte on the fixed val set.",
    )
    def proxy_model(context: dg.AssetExecutionContext, pipes: dg.PipesSubprocessClient) -> dg.MaterializeResult:
        import sentencepiece as spm

        from plasma_pipeline.mix_search.proxy import proxy_train_config, score_proxy

        p = context.partition_key
        store = store_for(recipe)
        name = store_asset(MODEL, p)
        with StepInputs(context, store) as inputs:
            shards = _pin_partition(inputs, SHARDS, p)
            val, tok = inputs.get(VAL_SET.to_user_string()), inputs.get("tokenizer")
            tok_file = tok.file("tokenizer.model")
            vocab = spm.SentencePieceProcessor(model_file=str(tok_file)).get_piece_size()
            fp = hashlib.sha256(json.dumps({"code": cv[MODEL], "data": shards.id, "tok": tok.id},
                                           sort_keys=True).encode()).hexdigest()[:16]
            work = store.work_dir(name, fp, dict(inputs.versions))
            run = proxy_train_config(cfg, shards.path, work, vocab, recipe.mix.seq_len)
            (work / "run.json").write_text(json.dumps(run, indent=1))
            context.log.info(f"variant {p}: proxy {run['model']} for {run['steps']} steps in {work}")
            # Proxies train where pretraining trains: the pretrain section's launcher (defs/launch.py).
            invocation = launch_trainer(context, recipe.launchers.get("pretrain"), pipes, str(work / "run.json"),
                                        extras={"asset": name, "data_version": shards.id})
            trainer = dict(invocation.get_materialize_result().metadata or {})
            final = work / "final"
            if not (final / "model.safetensors").exists():
                raise RuntimeError(f"trainer finished without writing {final}/model.safetensors")
            scores = score_proxy(final, val.path, tok_file, cfg.val_max_rows)
            bpb = {d: s["bits_per_byte"] for d, s in scores.items()}
            smeta = shards.manifest.get("metadata") or {}
            with store.writer(name) as w:
                for f in final.iterdir():
                    if f.is_file():
                        shutil.copy2(f, w.dir / f.name)
                if (work / "metrics.jsonl").exists():
                    shutil.copy2(work / "metrics.jsonl", w.dir / "metrics.jsonl")
                (w.dir / "run.json").write_text(json.dumps(run, indent=1))
                (w.dir / "val_scores.json").write_text(json.dumps(scores, indent=1, sort_keys=True))
                # The id is the weights; the scores and logs ride along, so identical weights keep the version.
                w.annex.update(x.name for x in w.dir.iterdir() if x.name not in IDENTITY_FILES)
                w.metadata.update({
                    "variant": p,
                    "variant_weights": smeta.get("variant_weights", variants[p]),
                    "token_shares": smeta.get("token_shares", {}),
                    "available_tokens": smeta.get("available_tokens", {}),
                    "val_bpb": bpb,
                    "val_set_version": val.id,
                    "steps": run["steps"],
                })
                w.inputs.update(inputs.versions)
                version = w.publish()
            store.mark_work_published(work, version.id)
        context.log.info(f"variant {p}: val bpb " + ", ".join(f"{d} {b:.4f}" for d, b in bpb.items()))
        extra = {f"val_bpb/{d}": float(b) for d, b in bpb.items()}
        extra["val_bpb_mean"] = float(sum(bpb.values()) / len(bpb))
        extra.update({f"trainer/{k}": v for k, v in trainer.items() if k in ("run_seconds", "final_loss", "n_params")})
        return version_result(version, MODEL, extra=extra, inputs=inputs.versions)

    @dg.asset(
        key=REPORT, deps=[MODEL, VAL_SET], group_name=GROUP, code_version=cv[REPORT], kinds={"markdown"},
        description="Per-domain val bpb of every variant (table and plot), the regressions from weights to the "
                    "objective with their cross-validated rank correlation, and the predicted best mix.",
    )
    def report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from plasma_pipeline.mix_search.report import build_report

        store = store_for(recipe)
        domains = domains_of(recipe)
        name = REPORT.to_user_string()
        with StepInputs(context, store) as inputs, store.writer(name) as w:
            rows, missing, available = [], [], {}
            for p in variants:
                vid = recorded_partition_version(context.instance, MODEL, p)
                if vid is None:
                    missing.append(p)
                    continue
                md = inputs.pin(store_asset(MODEL, p), vid).manifest.get("metadata") or {}
                rows.append({"name": p, "weights": md["variant_weights"], "shares": md["token_shares"],
                             "bpb": md["val_bpb"]})
                # a variant that leaves a domain out does not read it: take each domain from one that did
                available.update(md.get("available_tokens", {}))
            total = recipe.mix.total_tokens
            max_share = {d: min(1.0, recipe.mix.max_epochs * available[d] / total) if d in available else 1.0
                         for d in domains} if available else None
            if rows:
                result = build_report(rows, domains, cfg, recipe.mix.weights, w.dir, max_share=max_share,
                                      missing=missing)
            else:  # e.g. `plasma materialize --stale` before any proxy ran: say so rather than fail the run
                text = "# Mixture search\n\nNo variant has finished yet: run `plasma mix-search`.\n"
                (w.dir / "report.md").write_text(text)
                result = {"markdown": text, "suggestion": None, "fits": []}
            w.metadata.update({"suggestion": result["suggestion"], "fits": result["fits"], "missing": missing,
                               "variants_done": len(rows)})
            w.inputs.update(inputs.versions)
            version = w.publish()
        if missing:
            context.log.warning(f"report over {len(rows)} variant(s); not materialized: {', '.join(missing)}")
        sug = result["suggestion"] or {}
        extra = {
            # The UI cannot fetch the report's PNG files: they go in as data URIs, the plots also on their own.
            "report": dg.MetadataValue.md(embed_images(result["markdown"], version.path)),
            "report_path": dg.MetadataValue.path(str(version.path / "report.md")),
            "variants_done": dg.MetadataValue.int(len(rows)),
        }
        for png, alt in (("bpb.png", "per-domain val bpb per variant"), ("fit.png", "leave-one-out fit")):
            if (version.path / png).is_file():
                extra[png.removesuffix(".png") + "_plot"] = png_markdown((version.path / png).read_bytes(), alt)
        if sug:
            extra["suggested_weights"] = dg.MetadataValue.json(sug["weights"])
            extra["predicted_objective"] = dg.MetadataValue.float(sug["predicted_objective"])
            for f in result["fits"]:
                if f["cv_spearman"] is not None:
                    extra[f"cv_spearman/{f['model']}"] = dg.MetadataValue.float(f["cv_spearman"])
        return version_result(version, REPORT, extra=extra, inputs=inputs.versions)

    return [variant, val_set, proxy_shards, proxy_model, report]


# --- what `plasma mix-search` needs from Dagster ------------------------------------------------------------------


def observe_variants(instance: dg.DagsterInstance, defs: dg.Definitions) -> None:
    """Record every variant's current data version (its weights' fingerprint), so edits show up as stale."""
    from dagster._core.definitions.observe import observe

    source = [a for a in defs.assets if VARIANT in (getattr(a, "keys", None) or {getattr(a, "key", None)})]
    observe(source, instance=instance)


def statuses(instance: dg.DagsterInstance, defs: dg.Definitions) -> dict[str, str]:
    """{"mix_search/proxy_model[sample-03]": "FRESH" | "STALE" | "MISSING", ...} for every search asset."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._time import get_current_datetime

    graph = defs.resolve_asset_graph()
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=graph)
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
    out = {}
    for key in (VAL_SET, SHARDS, MODEL, REPORT):
        node = graph.get(key)
        if node.partitions_def is None:
            out[key.to_user_string()] = resolver.get_status(key).value
        else:
            for p in node.partitions_def.get_partition_keys():
                out[f"{key.to_user_string()}[{p}]"] = resolver.get_status(key, p).value
    return out
