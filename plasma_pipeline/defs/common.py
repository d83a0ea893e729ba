"""What every asset shares: code versions from recipe slices, and turning a published version into Dagster metadata."""


import contextlib
import json
from collections import Counter
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from plasma_pipeline.recipe import Recipe
from plasma_pipeline.shards import CorruptShardError, ShardStore, Version

# Bump a stage's version when its code changes what it produces; the recipe slice covers config changes.
IMPL_VERSION = {
    "collect": "1",
    "clean": "3",  # 2: one output shard per input shard (resumable); 3: language-aware, no fragments, code kept
    "quality": "1",
    "toxicity": "1",
    "score": "2",  # 2: one output shard per input shard, written by the worker (resumable)
    "dedup": "3",  # 2: one split per source; 3: eval battery documents and their near-duplicates held out
    "tokenizer": "2",  # 2: streamed sample, training paths pinned in the model
    "mix": "2",  # 2: train shards written by the pack workers, one file per rows_per_shard (<= max_rows_per_shard)
    "pretrain": "1",
    "instructions": "2",  # 2: built from the deduped (filtered) documents, no unfiltered offline-file fallback
    "sft_shards": "1",
    "sft": "1",
    "evaluation": "2",  # 2: each model on its own lineage's val data
}

CHECK_MANIFEST = "shards_match_manifest"

# One Dagster asset group per pipeline stage, in pipeline order, so the UI's lineage view reads as the twelve stages.
STAGE_GROUPS = (
    "collect", "clean", "classifiers", "score", "dedup", "tokenizer",
    "mix", "pretrain", "instructions", "sft_shards", "sft", "evaluation",
)


def group_name(stage: str) -> str:
    """`01_collect` … `12_evaluation`: the UI lists and lays out groups by name, so the number gives pipeline order."""
    return f"{STAGE_GROUPS.index(stage) + 1:02d}_{stage}"


GROUP_NAMES = tuple(group_name(s) for s in STAGE_GROUPS)

# Data stages follow their parents when the automation daemon runs (`dagster dev`): a rematerialized parent or a
# changed code version starts them. Training assets get no condition: retraining is never silent.
DATA_AUTOMATION = (
    dg.AutomationCondition.eager() | dg.AutomationCondition.code_version_changed()
).with_label("eager or code changed")


def code_version(recipe: Recipe, section: str, source: str | None = None) -> str:
    return recipe.fingerprint(section, source, IMPL_VERSION[section])


def manifest_check_spec(key: dg.AssetKey | str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        CHECK_MANIFEST, asset=key,
        description="re-hashes every shard and file of the version Dagster last recorded against its manifest",
    )


def recorded_version_id(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    """The data version (= store version id) of the asset's latest materialization in this instance."""
    ev = instance.get_latest_materialization_event(key)
    if ev is None or ev.asset_materialization is None:
        return None
    return (ev.asset_materialization.tags or {}).get("dagster/data_version")


class StepInputs(contextlib.ExitStack):
    """The parent versions one step reads: those Dagster recorded as the parents' latest materializations, each
    held under a read lease for the whole step, so a concurrent publish plus retention cannot delete them.

    `versions` ({asset: version id}) goes into the new version's manifest `inputs` (which pins the parents while
    the new version is kept) and into the materialization's metadata."""

    def __init__(self, context: dg.AssetExecutionContext, store: ShardStore):
        super().__init__()
        self.context, self.store = context, store
        self.versions: dict[str, str] = {}

    def get(self, asset: str) -> Version:
        vid = recorded_version_id(self.context.instance, dg.AssetKey.from_user_string(asset))
        if vid is None:
            vid = self.store.current(asset).id
            self.context.log.warning(f"{asset}: no materialization recorded in this Dagster instance; "
                                     f"reading the store's CURRENT version {vid}")
        return self.pin(asset, vid)

    def pin(self, asset: str, version_id: str, record: bool = True) -> Version:
        """Lease one given version (e.g. a model's training data, found through its lineage)."""
        try:
            version = self.enter_context(self.store.lease(asset, version_id))
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{asset}@{version_id} is recorded as the version to read, but the store no longer has it "
                f"({e}); rematerialize {asset}"
            ) from e
        if record:
            self.versions[asset] = version_id
        return version


def stage_asset(
    recipe: Recipe,
    key: dg.AssetKey | str,
    *,
    section: str,
    group: str,
    deps: list = (),
    source: str | None = None,
    kinds: set[str],
    description: str,
    automated: bool = True,
    extra_checks: list[dg.AssetCheckSpec] = (),
    **kwargs: Any,
):
    """The decorator every stage asset shares: code version from its recipe slice, its stage group, the manifest
    check, and (for data stages) the automation condition that lets the UI propagate changes."""
    key = dg.AssetKey.from_coercible(key)
    return dg.asset(
        key=key,
        deps=list(deps),
        group_name=group_name(group),
        code_version=code_version(recipe, section, source),
        check_specs=list(extra_checks) or None,
        automation_condition=DATA_AUTOMATION if automated else None,
        kinds=set(kinds),
        description=description,
        # the recipe section whose fingerprint is the code version: `plasma status` names it when it changes
        metadata={"recipe_slice": f"sources.{source}.{section}" if source else section},
        **kwargs,
    )


def version_result(
    version: Version,
    key: dg.AssetKey | str | None = None,
    extra: dict[str, Any] | None = None,
    checks: list[dg.AssetCheckResult] = (),
    inputs: dict[str, str] | None = None,
    kind: str = "data",
    decode=None,
) -> dg.MaterializeResult:
    """MaterializeResult whose data version is the manifest hash, with the metadata of its kind.

    kind "data": rows, bytes, the non-zero drop rules (table and plot), kept share, a readable sample (token ids
    through `decode` when given) and the other counters; kind "model": only what `extra` brings (see
    metadata.model_metadata) plus the version and its inputs. The manifest's own metadata follows either way."""
    from plasma_pipeline.defs.metadata import data_metadata, inputs_markdown

    inputs = dict(sorted((inputs if inputs is not None else version.inputs).items()))
    # The UI lists entries in this order: what the kind is about first, identifiers after, the stage's own last.
    extra = {k: v if isinstance(v, dg.MetadataValue) else _to_metadata(v) for k, v in (extra or {}).items()}
    own = {k: _to_metadata(v) for k, v in (version.manifest.get("metadata") or {}).items() if k not in extra}
    metadata: dict[str, Any] = data_metadata(version, version.stats, decode=decode) if kind == "data" else dict(extra)
    metadata["inputs"] = dg.MetadataValue.md(inputs_markdown(inputs))
    metadata["version"] = dg.MetadataValue.text(version.id)
    metadata["path"] = dg.MetadataValue.path(str(version.path))
    metadata["input_versions"] = dg.MetadataValue.json(inputs)
    metadata.update(own if kind != "data" else {**own, **extra})
    metadata = {k: v for k, v in metadata.items() if v is not None}
    return dg.MaterializeResult(
        asset_key=key,
        metadata=metadata,
        data_version=dg.DataVersion(version.id),
        check_results=list(checks),
    )


def manifest_checks(recipe: Recipe, keys: list[dg.AssetKey]) -> dg.AssetChecksDefinition:
    """`shards_match_manifest` for every asset, as one real asset check: on demand (or after each
    materialization) it re-hashes the stored version that Dagster last recorded."""

    @dg.multi_asset_check(specs=[manifest_check_spec(k) for k in keys], can_subset=True,
                          name="shards_match_manifest_checks")
    def _checks(context: dg.AssetCheckExecutionContext):
        store = store_for(recipe)
        for check_key in sorted(context.selected_asset_check_keys, key=lambda k: k.asset_key.to_user_string()):
            asset = check_key.asset_key.to_user_string()
            vid = recorded_version_id(context.instance, check_key.asset_key)
            try:
                if vid is None:
                    raise FileNotFoundError(f"{asset} has no recorded materialization")
                with store.lease(asset, vid) as version:
                    version.verify()
                    ok = version.rows > 0 or bool(version.manifest.get("files"))
                    desc = (f"{asset}@{vid}: {len(version.manifest['shards'])} shards and "
                            f"{len(version.manifest.get('files', []))} files match their manifest hashes")
            except (CorruptShardError, FileNotFoundError) as e:
                ok, desc = False, str(e)
            yield dg.AssetCheckResult(
                check_name=CHECK_MANIFEST, asset_key=check_key.asset_key, passed=ok,
                severity=dg.AssetCheckSeverity.ERROR, description=desc,
                metadata={"version": dg.MetadataValue.text(vid or ""), "detail": dg.MetadataValue.text(desc)},
            )

    return _checks


def _to_metadata(v: Any) -> Any:
    """A stage's own metadata value as a Dagster one; None (left out) for empty values and zero numbers, which
    would only draw flat lines in the UI's Plots tab."""
    if v is None or v == "" or v == {} or v == []:
        return None
    if isinstance(v, bool):
        return dg.MetadataValue.bool(v)
    if isinstance(v, int):
        return dg.MetadataValue.int(v) if v else None
    if isinstance(v, float):
        return dg.MetadataValue.float(v) if v else None
    if isinstance(v, str):
        return dg.MetadataValue.md(v) if v.startswith(("|", "#")) else dg.MetadataValue.text(v)
    return dg.MetadataValue.json(json.loads(json.dumps(v, default=str)))


def log_progress(context: dg.AssetExecutionContext, what: str, done: int, total: int, stats: Counter,
                 started: float | None = None, docs_done: int | None = None, docs_total: int | None = None) -> None:
    """One readable progress line: documents done of total (or shards, without a document total), kept and
    dropped so far, and with `started` the rate and an ETA."""
    import time

    kept = stats.get("kept", 0)
    dropped = sum(v for k, v in stats.items() if k.startswith("dropped/"))
    docs = docs_done if docs_done is not None else kept + dropped
    if docs_total:
        line = f"{what}: {docs:,}/{docs_total:,} docs ({docs / docs_total:.0%}), shard {done}/{total}"
    else:
        line = f"{what}: shard {done}/{total}, {docs:,} docs"
    line += f", kept {kept:,}, dropped {dropped:,}"
    if started is not None and done:
        elapsed = max(time.monotonic() - started, 1e-9)
        left = (elapsed / docs * (docs_total - docs)) if docs_total and docs else elapsed / done * (total - done)
        line += f" · {docs / elapsed:,.0f} docs/s · {elapsed:.0f} s elapsed, ETA {left:.0f} s"
    context.log.info(line)


def store_for(recipe: Recipe) -> ShardStore:
    from pathlib import Path

    from plasma_pipeline.recipe import REPO_ROOT

    if "://" in recipe.store.root:  # a URL (s3://, file://) is absolute already
        return ShardStore(recipe.store, recipe.store.root)
    root = Path(recipe.store.root)
    if not root.is_absolute():
        root = REPO_ROOT / root
    return ShardStore(recipe.store, root)
