"""What every asset shares: code versions from recipe slices, and turning a published version into Dagster metadata."""


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
    "clean": "1",
    "quality": "1",
    "toxicity": "1",
    "score": "1",
    "dedup": "2",  # 2: one split per source
    "tokenizer": "1",
    "mix": "1",
    "pretrain": "1",
    "instructions": "1",
    "sft_shards": "1",
    "sft": "1",
    "evaluation": "1",
}

CHECK_MANIFEST = "shards_match_manifest"

# One Dagster asset group per pipeline stage, in pipeline order, so the UI's lineage view reads as the twelve stages.
STAGE_GROUPS = (
    "collect", "clean", "classifiers", "score", "dedup", "tokenizer",
    "mix", "pretrain", "instructions", "sft_shards", "sft", "evaluation",
)

# Data stages follow their parents when the automation daemon runs (`dagster dev`): a rematerialized parent or a
# changed code version starts them. Training assets get no condition: retraining is never silent.
DATA_AUTOMATION = (
    dg.AutomationCondition.eager() | dg.AutomationCondition.code_version_changed()
).with_label("eager or code changed")


def code_version(recipe: Recipe, section: str, source: str | None = None) -> str:
    return recipe.fingerprint(section, source, IMPL_VERSION[section])


def manifest_check_spec(key: dg.AssetKey | str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        CHECK_MANIFEST, asset=key, description="every shard and file hashes to its manifest entry, and rows > 0"
    )


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
        group_name=group,
        code_version=code_version(recipe, section, source),
        check_specs=[manifest_check_spec(key), *extra_checks],
        automation_condition=DATA_AUTOMATION if automated else None,
        kinds=set(kinds),
        description=description,
        **kwargs,
    )


def _sample_markdown(version: Version, n: int = 5) -> str:
    shards = version.shards()
    if not shards:
        return "_no table shards (model asset)_"
    pf = pq.ParquetFile(shards[0])
    table = pf.read_row_group(0) if pf.num_row_groups else pf.read()
    table = table.slice(0, n)
    cols = [c for c in table.column_names if c != "meta"][:6]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table.select(cols).to_pylist():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, list):
                s = f"[{len(v)} items] " + " ".join(map(str, v[:8]))
            else:
                s = str(v)
            s = s.replace("\n", " ⏎ ").replace("|", "\\|")
            cells.append(s[:140] + ("…" if len(s) > 140 else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _counter_markdown(stats: dict[str, int]) -> str:
    if not stats:
        return "_no counters_"
    lines = ["| counter | count |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in sorted(stats.items())]
    return "\n".join(lines)


def version_result(
    version: Version,
    key: dg.AssetKey | str | None = None,
    extra: dict[str, Any] | None = None,
    checks: list[dg.AssetCheckResult] = (),
) -> dg.MaterializeResult:
    """MaterializeResult whose data version is the manifest hash, with counts, drops, a sample and the check."""
    stats = version.stats
    dropped = {k: v for k, v in stats.items() if k.startswith("dropped/")}
    try:
        version.verify()
        ok = version.rows > 0 or bool(version.manifest.get("files"))
        desc = f"{len(version.manifest['shards'])} shards, {len(version.manifest.get('files', []))} files verified"
    except CorruptShardError as e:
        ok, desc = False, str(e)
    metadata: dict[str, Any] = {
        "rows": dg.MetadataValue.int(version.rows),
        "bytes": dg.MetadataValue.int(version.manifest["bytes"]),
        "shards": dg.MetadataValue.int(len(version.manifest["shards"])),
        "version": dg.MetadataValue.text(version.id),
        "path": dg.MetadataValue.path(str(version.path)),
        "kept": dg.MetadataValue.int(int(stats.get("kept", version.rows))),
        "dropped_total": dg.MetadataValue.int(sum(dropped.values())),
        "counters": dg.MetadataValue.md(_counter_markdown(stats)),
        "sample": dg.MetadataValue.md(_sample_markdown(version)),
    }
    for k, v in {**(version.manifest.get("metadata") or {}), **(extra or {})}.items():
        metadata[k] = v if isinstance(v, dg.MetadataValue) else _to_metadata(v)
    return dg.MaterializeResult(
        asset_key=key,
        metadata=metadata,
        data_version=dg.DataVersion(version.id),
        check_results=[
            dg.AssetCheckResult(
                check_name=CHECK_MANIFEST, asset_key=key, passed=ok, metadata={"detail": dg.MetadataValue.text(desc)}
            ),
            *checks,
        ],
    )


def _to_metadata(v: Any) -> Any:
    if isinstance(v, bool):
        return dg.MetadataValue.bool(v)
    if isinstance(v, int):
        return dg.MetadataValue.int(v)
    if isinstance(v, float):
        return dg.MetadataValue.float(v)
    if isinstance(v, str):
        return dg.MetadataValue.md(v) if v.startswith(("|", "#")) else dg.MetadataValue.text(v)
    return dg.MetadataValue.json(json.loads(json.dumps(v, default=str)))


def log_progress(context: dg.AssetExecutionContext, what: str, done: int, total: int, stats: Counter) -> None:
    kept = stats.get("kept", 0)
    context.log.info(f"{what}: shard {done}/{total}, kept {kept:,} so far, dropped {sum(v for k, v in stats.items() if k.startswith('dropped/')):,}")


def store_for(recipe: Recipe) -> ShardStore:
    from pathlib import Path

    from plasma_pipeline.recipe import REPO_ROOT

    root = Path(recipe.store.root)
    if not root.is_absolute():
        root = REPO_ROOT / root
    return ShardStore(recipe.store, root)
