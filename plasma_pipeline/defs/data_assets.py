"""Stages 1-7 as Dagster assets: thin wrappers that read upstream versions, call a stage library, publish a version."""

import shutil
import time


from pathlib import Path


import dagster as dg

from plasma_pipeline.defs.common import (
    StepInputs,
    code_version,
    log_progress,
    stage_asset,
    store_for,
    version_result,
)
from plasma_pipeline.defs.metadata import token_decoder
from plasma_pipeline import executor
from plasma_pipeline.progress import terminal_bar
from plasma_pipeline.recipe import Recipe
from plasma_pipeline.shard_work import CACHE_DIR, clear_cache, resumable_map


def shard_cache(store, asset: str):
    return store.asset_dir(asset) / "work" / CACHE_DIR


def publish_shard_results(context, store, w, asset: str, fn, parent, args: tuple, code_ver: str, recipe: Recipe,
                          args_key: str = "") -> None:
    """Per-shard work on the parent version's shards, resuming from results an earlier killed run left in the
    asset's shard cache; workers write and hash their own output shards, this process only adopts them."""
    entries = parent.manifest["shards"]
    inputs = [(parent.path / e["path"], e["sha256"]) for e in entries]
    results = resumable_map(
        shard_cache(store, asset), fn, inputs, args, code_ver, processes=recipe.store.workers,
        row_group_rows=recipe.store.row_group_rows, args_key=args_key, log=context.log.info,
    )
    started = time.monotonic()
    docs_total = sum(int(e.get("rows", 0)) for e in entries)
    docs_done = 0
    with executor.use(recipe.executor), terminal_bar(docs_total, asset) as bar:
        for i, (e, r) in enumerate(zip(entries, results), 1):
            if r.file is not None:
                w.add_file(r.file, sha256=r.sha256)
            w.stats.update(r.stats)
            docs_done += int(e.get("rows", 0))
            bar.update(int(e.get("rows", 0)))
            log_progress(context, asset, i, len(entries), w.stats, started, docs_done=docs_done, docs_total=docs_total)


def raw_asset(recipe: Recipe, name: str) -> dg.AssetsDefinition:
    from plasma_pipeline.collect import HFSourceConfig, collect_hf, iter_documents

    src = recipe.sources[name]
    key = dg.AssetKey(["raw", name])

    @stage_asset(
        recipe,
        key,
        section="collect",
        group="collect",
        source=name,
        kinds={"parquet"},
        description=f"Stage 1: documents collected from source `{name}` ({type(src.collect).__name__}).",
        automated=False,
    )
    def _raw(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        store = store_for(recipe)
        asset = key.to_user_string()
        work = None
        with store.writer(asset) as w:
            if isinstance(src.collect, HFSourceConfig):
                # Hub streams commit their batches and cursor here, so a killed or dropped collection resumes.
                work = store.work_dir(asset, "hf-progress", {})
                tables = collect_hf(name, src.collect, w.stats, work_dir=work, log=context.log.warning)
            else:
                tables = iter_documents(name, src.collect, w.stats)
            started = time.monotonic()
            for i, table in enumerate(tables, 1):
                w.write(table)
                if i % 10 == 0:
                    n = w.stats.get("kept", 0)
                    context.log.info(f"{asset}: collected {n:,} documents · "
                                     f"{n / max(time.monotonic() - started, 1e-9):,.0f} docs/s")
            version = w.publish()
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)  # the published version holds the data now
        context.log.info(f"raw/{name}: {version.rows:,} documents in version {version.id}")
        return version_result(version, key)

    return _raw


def clean_asset(recipe: Recipe, name: str) -> dg.AssetsDefinition:
    from plasma_pipeline.clean import clean_table

    cfg = recipe.sources[name].clean
    key = dg.AssetKey(["clean", name])

    @stage_asset(
        recipe,
        key,
        section="clean",
        group="clean",
        source=name,
        deps=[dg.AssetKey(["raw", name])],
        kinds={"parquet", "fasttext"},
        description=f"Stage 2: `{name}` normalised, HTML stripped, language-identified and rule-filtered.",
    )
    def _clean(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        store = store_for(recipe)
        with StepInputs(context, store) as inputs, store.writer(key.to_user_string()) as w:
            raw = inputs.get(f"raw/{name}")
            publish_shard_results(context, store, w, key.to_user_string(), clean_table, raw, (cfg,),
                                  code_version(recipe, "clean", name), recipe)
            w.inputs.update(inputs.versions)
            version = w.publish()
        clear_cache(shard_cache(store, key.to_user_string()))
        return version_result(version, key, inputs=inputs.versions)

    return _clean


def classifier_assets(recipe: Recipe) -> list[dg.AssetsDefinition]:
    from plasma_pipeline.classify import train_quality_classifier, train_toxicity_classifier

    q = recipe.quality
    pos, neg = list(q.positive_sources), list(q.negative_sources)

    @stage_asset(
        recipe,
        "quality_classifier",
        section="quality",
        group="classifiers",
        deps=[dg.AssetKey(["clean", s]) for s in dict.fromkeys(pos + neg)],
        kinds={"fasttext"},
        description="Stage 3: fastText quality classifier, curated sources vs web-like sources (DCLM style).",
    )
    def quality_classifier(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        store = store_for(recipe)
        with StepInputs(context, store) as inputs, store.writer("quality_classifier") as w:
            clean = {s: inputs.get(f"clean/{s}") for s in dict.fromkeys(pos + neg)}

            def tables(names):
                for s in names:
                    yield from clean[s].iter_tables()

            meta = train_quality_classifier(tables(pos), tables(neg), q, w.dir, w.stats)
            w.metadata.update(meta)
            w.inputs.update(inputs.versions)
            version = w.publish()
        return version_result(version, "quality_classifier", inputs=inputs.versions)

    t = recipe.toxicity
    tox_sources = list(dict.fromkeys(getattr(t, "clean_sources", None) or pos))

    @stage_asset(
        recipe,
        "toxicity_classifier",
        section="toxicity",
        group="classifiers",
        deps=[dg.AssetKey(["clean", s]) for s in tox_sources],
        kinds={"fasttext"},
        description="Stage 3: fastText toxicity classifier plus a word-list filter.",
    )
    def toxicity_classifier(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        store = store_for(recipe)
        with StepInputs(context, store) as inputs, store.writer("toxicity_classifier") as w:
            clean = {s: inputs.get(f"clean/{s}") for s in tox_sources}

            def tables():
                for s in tox_sources:
                    yield from clean[s].iter_tables()

            meta = train_toxicity_classifier(tables(), t, w.dir, w.stats)
            w.metadata.update(meta)
            w.inputs.update(inputs.versions)
            version = w.publish()
        return version_result(version, "toxicity_classifier", inputs=inputs.versions)

    return [quality_classifier, toxicity_classifier]


def scored_asset(recipe: Recipe, name: str) -> dg.AssetsDefinition:
    from plasma_pipeline.classify import score_shard

    cfg = recipe.sources[name].score
    key = dg.AssetKey(["scored", name])

    @stage_asset(
        recipe,
        key,
        section="score",
        group="score",
        source=name,
        deps=[dg.AssetKey(["clean", name]), "quality_classifier", "toxicity_classifier"],
        kinds={"parquet", "fasttext"},
        description=f"Stage 4: `{name}` with quality and toxicity scores, thresholded per source.",
    )
    def _scored(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        store = store_for(recipe)
        with StepInputs(context, store) as inputs, store.writer(key.to_user_string()) as w:
            clean = inputs.get(f"clean/{name}")
            qv, tv = inputs.get("quality_classifier"), inputs.get("toxicity_classifier")
            args = (str(qv.path), str(tv.path), cfg)
            publish_shard_results(context, store, w, key.to_user_string(), score_shard, clean, args,
                                  code_version(recipe, "score", name), recipe, args_key=f"{qv.id}:{tv.id}")
            w.inputs.update(inputs.versions)
            version = w.publish()
        clear_cache(shard_cache(store, key.to_user_string()))
        return version_result(version, key, inputs=inputs.versions)

    return _scored


def dedup_asset(recipe: Recipe) -> dg.AssetsDefinition:
    import hashlib
    import json

    from plasma_pipeline.dedup.core import dedup_tables
    from plasma_pipeline.dedup.resume import SignatureCache
    from plasma_pipeline.dedup.survivors import adopt_survivors, survivor_workers, write_survivors
    from plasma_pipeline.instruct.holdout import Holdout, battery_config

    @stage_asset(
        recipe,
        "deduped",
        section="dedup",
        group="dedup",
        deps=[dg.AssetKey(["scored", s]) for s in recipe.sources],
        kinds={"parquet", "minhash"},
        description="Stage 5: exact then MinHash-LSH near-duplicate removal across the whole corpus; the eval "
                    "battery's documents and their near-duplicates are held out.",
    )
    def deduped(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        store = store_for(recipe)
        with StepInputs(context, store) as inputs, store.writer("deduped") as w:
            versions = {s: inputs.get(f"scored/{s}") for s in recipe.sources}
            owned = [(s, str(p)) for s, v in versions.items() for p in v.shards()]
            shards = [p for _, p in owned]
            context.log.info(f"dedup over {len(shards)} shards from {len(versions)} sources")
            # signatures outlive a killed run: one cache entry per input shard, keyed by its hash and this code
            sig_version = code_version(recipe, "dedup")
            keys = [SignatureCache.key(sig_version, e["sha256"]) for v in versions.values()
                    for e in v.manifest["shards"]]
            cache = SignatureCache(str(shard_cache(store, "deduped")), keys)
            with executor.use(recipe.executor), store.scratch("deduped") as work:
                result = dedup_tables(shards, recipe.dedup, w.stats, cache=cache, log=context.log.info)
                holdout = Holdout.from_recipe(recipe.instructions, recipe.dedup)
                # Second pass, in the shard workers: each writes one input shard's survivors that are not eval
                # battery documents; this process adopts the files in input order, one split per source, so
                # later stages stream one domain without reading the others.
                workers = survivor_workers(shards, result, recipe.dedup)
                context.log.info(f"second pass: {len(owned)} shards on {workers} worker(s)")
                files, writers = adopt_survivors(w, write_survivors(
                    owned, result, holdout, work / "survivors", workers, recipe.store.max_rows_per_shard,
                    recipe.store.row_group_rows))
                context.log.info(f"second pass: {files} shards written by {len(writers)} process(es)")
            w.stats["kept"] -= holdout.n_dropped
            w.metadata.update(result.metadata)
            w.metadata["eval_holdout"] = holdout.summary()
            w.inputs.update(inputs.versions)
            version = w.publish()
        clear_cache(shard_cache(store, "deduped"))
        context.log.info(f"eval hold-out: {holdout.n_dropped} documents of {len(holdout.items)} battery items dropped")
        return version_result(version, "deduped", inputs=inputs.versions)

    # The battery the hold-out removes is set in the instructions section (the evaluation prompts with it): a
    # change there makes deduped stale too.
    blob = json.dumps({"dedup": code_version(recipe, "dedup"), "battery": battery_config(recipe.instructions)},
                      sort_keys=True, default=str)
    version = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return deduped.map_asset_specs(lambda spec: spec.replace_attributes(
        code_version=version, metadata={**spec.metadata, "recipe_slice": "dedup + instructions battery"}))


def tokenizer_asset(recipe: Recipe) -> dg.AssetsDefinition:
    from plasma_pipeline.tokenizer import train_tokenizer

    @stage_asset(
        recipe,
        "tokenizer",
        section="tokenizer",
        group="tokenizer",
        deps=["deduped"],
        kinds={"sentencepiece"},
        description="Stage 6: SentencePiece BPE with byte fallback and reserved chat tokens.",
    )
    def tokenizer(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        store = store_for(recipe)
        with StepInputs(context, store) as inputs, store.writer("tokenizer") as w, store.scratch("tokenizer") as work:
            deduped = inputs.get("deduped")
            # the sample's spill files and the training text file go to scratch, not into the version
            meta = train_tokenizer(_domain_tables(deduped, recipe), recipe.tokenizer, w.dir, w.stats, work_dir=work)
            w.metadata.update(meta)
            w.inputs.update(inputs.versions)
            version = w.publish()
        return version_result(version, "tokenizer", inputs=inputs.versions)

    return tokenizer


def _domain_tables(deduped, recipe: Recipe) -> dict:
    """Per-source iterables over the deduped corpus (one split per source), streaming shard by shard."""
    return {s: deduped.iter_tables(split=s) for s in recipe.sources}


def pretrain_shards_asset(recipe: Recipe) -> dg.AssetsDefinition:
    from plasma_pipeline.mix import ShardFiles, TokenCache, build_token_shards

    @stage_asset(
        recipe,
        "pretrain_shards",
        section="mix",
        group="mix",
        deps=["deduped", "tokenizer"],
        kinds={"parquet"},
        description="Stage 7: domain-weighted mix, tokenised and packed into train/val token shards.",
    )
    def pretrain_shards(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        store = store_for(recipe)
        cache_dir = shard_cache(store, "pretrain_shards")
        with (
            StepInputs(context, store) as inputs,
            store.writer("pretrain_shards") as w,
            store.scratch("pretrain_shards") as work,
            executor.use(recipe.executor),
        ):
            deduped, tok = inputs.get("deduped"), inputs.get("tokenizer")
            # shard paths: the worker processes read their own shards
            domains = {s: (lambda s=s: deduped.shards(split=s)) for s in recipe.mix.weights}
            # tokenised slices outlive a killed run, keyed by the input shard's hash, this code and the tokenizer
            cache = TokenCache(str(cache_dir), f"{code_version(recipe, 'mix')}:{tok.id}",
                               {str(deduped.path / e["path"]): e["sha256"] for e in deduped.manifest["shards"]})
            # the pack workers write, compress and hash the train shards; this process adopts them in order
            train = ShardFiles(str(work / "train"), lambda path, sha: w.add_file(Path(path), "train", sha),
                               recipe.store.max_rows_per_shard, recipe.store.row_group_rows)
            meta = build_token_shards(
                domains, str(tok.file("tokenizer.model")), recipe.mix, train, w.writer_for("val"),
                w.stats, work_dir=work, processes=recipe.store.workers, cache=cache, log=context.log.info,
            )
            w.metadata.update(meta)
            w.metadata["tokenizer_version"] = tok.id
            w.inputs.update(inputs.versions)
            version = w.publish()
            decode = token_decoder(tok.file("tokenizer.model"))
        clear_cache(cache_dir)
        return version_result(version, "pretrain_shards", inputs=inputs.versions, decode=decode)

    return pretrain_shards


def data_assets(recipe: Recipe) -> list[dg.AssetsDefinition]:
    out: list[dg.AssetsDefinition] = []
    for name in recipe.sources:
        out += [raw_asset(recipe, name), clean_asset(recipe, name), scored_asset(recipe, name)]
    out += classifier_assets(recipe)
    out += [dedup_asset(recipe), tokenizer_asset(recipe), pretrain_shards_asset(recipe)]
    return out


__all__ = ["data_assets"]
