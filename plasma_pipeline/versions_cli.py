"""`plasma versions ASSET` and `plasma lineage ASSET[@VERSION]`: what the store holds and what each version was built from.

Both read the shard store (manifests: created, rows, bytes, inputs) and, for the recipe slice and code version a
version was built with, the project's Dagster instance (the materialization whose data version is that id).
"""

from __future__ import annotations

import sys


def _size(n: int) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def version_states(store, asset: str) -> dict[str, str]:
    """{version id: "current" | "kept" | "pinned: <why>" | "removable"} as retention would judge it now."""
    from plasma_pipeline.retention import pins

    order = list(reversed(store.versions(asset)))  # newest first
    try:
        current = store.current(asset).id
    except FileNotFoundError:
        current = None
    kept = set(order[: store.cfg.keep_versions])
    pinned = pins(store, asset)
    out = {}
    for vid in order:
        if vid == current:
            out[vid] = "current"
        elif vid in kept:
            out[vid] = f"kept (newest {store.cfg.keep_versions})"
        elif vid in pinned:
            out[vid] = f"pinned: {pinned[vid]}"
        else:
            out[vid] = "removable (plasma gc)"
    return out


def versions_table(store, asset: str) -> list[str]:
    states = version_states(store, asset)
    if not states:
        raise SystemExit(f"error: the store under {store.root} has no versions of {asset!r}")
    rows = []
    for vid, state in states.items():
        m = store.version(asset, vid).manifest
        inputs = ", ".join(f"{k}@{v[:8]}" for k, v in sorted((m.get("inputs") or {}).items())) or "–"
        rows.append((vid, m.get("created", "?").replace("T", " ").rstrip("Z"), f"{m.get('rows', 0):,}",
                     _size(int(m.get("bytes", 0))), state, inputs))
    head = ("version", "created (UTC)", "rows", "bytes", "state", "inputs")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    fmt = "  ".join(f"{{:{'>' if i in (2, 3) else '<'}{w}}}" for i, w in enumerate(widths)) + "  {}"
    return [fmt.format(*head)] + [fmt.format(*r) for r in rows]


def _built_with(instance, graph, asset: str, vid: str) -> str:
    """`recipe slice X @ code version Y` from the materialization that recorded this version, if the instance has it."""
    import dagster as dg

    key = dg.AssetKey.from_user_string(asset)
    if graph is None or not graph.has(key):
        return ""
    meta = graph.get(key).metadata or {}
    slice_ = getattr(meta.get("recipe_slice"), "value", meta.get("recipe_slice")) or "?"
    code = None
    if instance is not None:
        recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=200).records
        for r in recs:
            tags = r.asset_materialization.tags or {}
            if tags.get("dagster/data_version") == vid:
                code = tags.get("dagster/code_version")
                break
    return f"recipe slice {slice_}" + (f" @ {code}" if code else " (not recorded in this Dagster instance)")


def lineage_lines(store, asset: str, vid: str, instance=None, graph=None) -> list[str]:
    lines: list[str] = []
    seen: set[tuple[str, str]] = set()

    def walk(a: str, v: str, prefix: str, last: bool, root: bool) -> None:
        branch = "" if root else ("└─ " if last else "├─ ")
        try:
            m = store.version(a, v).manifest
        except FileNotFoundError:
            lines.append(f"{prefix}{branch}{a}@{v}  (no longer in the store)")
            return
        desc = (f"{a}@{v}  {m.get('created', '?').replace('T', ' ').rstrip('Z')}, {m.get('rows', 0):,} rows, "
                f"{_size(int(m.get('bytes', 0)))}")
        built = _built_with(instance, graph, a, v)
        if (a, v) in seen:
            lines.append(f"{prefix}{branch}{a}@{v}  (see above)")
            return
        seen.add((a, v))
        inputs = sorted((m.get("inputs") or {}).items())
        lines.append(f"{prefix}{branch}{desc}" + (f" · {built}" if built else "") + ("" if inputs else " · a raw source"))
        child_prefix = prefix + ("" if root else ("   " if last else "│  "))
        for i, (pa_, pv) in enumerate(inputs):
            walk(pa_, pv, child_prefix, i == len(inputs) - 1, False)

    walk(asset, vid, "", True, True)
    return lines


def _store_and_instance(recipe: str | None):
    from plasma_pipeline.cli import _load
    from plasma_pipeline.defs.common import store_for

    r, defs, instance = _load(recipe)
    return store_for(r), defs.resolve_asset_graph(), instance


def cmd_versions(args) -> int:
    store, _, _ = _store_and_instance(args.recipe)
    print("\n".join(versions_table(store, args.asset)))
    return 0


def cmd_lineage(args) -> int:
    store, graph, instance = _store_and_instance(args.recipe)
    asset, _, vid = args.target.partition("@")
    try:
        vid = vid or store.current(asset).id
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    matches = [v for v in store.versions(asset) if v.startswith(vid)]
    if len(matches) != 1:
        print(f"error: {asset}@{vid}: {'no such version' if not matches else 'ambiguous prefix'} "
              f"(see `plasma versions {asset}`)", file=sys.stderr)
        return 1
    print("\n".join(lineage_lines(store, asset, matches[0], instance, graph)))
    return 0


__all__ = ["cmd_lineage", "cmd_versions", "lineage_lines", "versions_table"]
