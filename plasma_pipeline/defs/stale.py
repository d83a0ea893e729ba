"""Materialize exactly what is stale or missing, then keep going until nothing is.

Dagster marks only direct children of a changed asset as unsynced, and only once the parent has been
rematerialized; its CLI has no stale selection. So: compute the stale set, run it, recompute, repeat. An asset
whose rerun yields identical bytes publishes the same data version, so its children stay fresh and never run.
"""


import contextlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._time import get_current_datetime

from plasma_pipeline import progress

# Training is never started by a data change alone unless asked for (GPU hours are not "stale cleanup").
TRAINING_KEYS = {dg.AssetKey("base_model"), dg.AssetKey("chat_model")}
# A retrained model always has new weights, so what reads models (the next model, the evaluation) runs in the same
# run, after it, instead of once per round: evaluation runs once per change, on the models of that change.
MODEL_FOLLOWERS = TRAINING_KEYS | {dg.AssetKey("evaluation")}


class MaterializationFailed(RuntimeError):
    """A step failed, or an ERROR-severity asset check did not pass; the message names them."""


@contextlib.contextmanager
def _assets_bar(instance: dg.DagsterInstance, total: int) -> Iterator[None]:
    """A tqdm bar of assets materialized in the run this process is about to start (on a terminal only). The run
    executes in this thread, so a poller counts its materialization events from the instance."""
    if not progress.enabled():
        yield
        return
    started, stop = get_current_datetime(), threading.Event()

    def poll() -> None:
        run_id = None
        with progress.terminal_bar(total, "assets", unit="assets") as bar:
            finished = False
            while not finished:
                finished = stop.wait(1.0)  # one more count after the run ends, so the bar shows the last asset
                if run_id is None:
                    recs = instance.get_run_records(limit=1)
                    if recs and recs[0].create_timestamp >= started:
                        run_id = recs[0].dagster_run.run_id
                if run_id is not None:
                    done = len(instance.get_records_for_run(
                        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=total + 1).records)
                    bar.update(done - bar.n)

    thread = threading.Thread(target=poll, name="assets-bar", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def run_selection(job, instance: dg.DagsterInstance, keys, run_config=None):
    """Execute `keys` in one run; raise MaterializationFailed naming failed steps and failed checks."""
    total = len(keys) if keys is not None else len(job.asset_layer.selected_asset_keys)
    with _assets_bar(instance, total):
        result = job.execute_in_process(
            instance=instance, asset_selection=keys, raise_on_error=False, run_config=run_config or RUN_CONFIG
        )
    problems = []
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        problems.append(f"steps failed: {', '.join(failed) or 'unknown'}")
    bad_checks = [
        f"{c.asset_key.to_user_string()}:{c.check_name}"
        for c in result.get_asset_check_evaluations()
        if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR
    ]
    if bad_checks:
        problems.append(f"checks failed: {', '.join(bad_checks)}")
    if problems:
        raise MaterializationFailed("; ".join(problems) + " (run " + result.run_id + "; see its log)")
    return result


def _with_model_followers(graph: AssetGraph, keys: list[dg.AssetKey], include_training: bool) -> list[dg.AssetKey]:
    out = list(keys)
    frontier = [k for k in keys if k in TRAINING_KEYS]
    while frontier:
        k = frontier.pop()
        for child in graph.get(k).child_keys:
            if child in MODEL_FOLLOWERS and child not in out and (include_training or child not in TRAINING_KEYS):
                out.append(child)
                frontier.append(child)
    return out

# Step-level INFO (progress, counters, trainer metrics) without Dagster's per-event DEBUG lines.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _resolver(instance: dg.DagsterInstance, defs: dg.Definitions) -> tuple[AssetGraph, CachingStaleStatusResolver]:
    graph: AssetGraph = defs.resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    return graph, CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)


def stale_keys(instance: dg.DagsterInstance, defs: dg.Definitions) -> list[tuple[dg.AssetKey, str]]:
    graph, resolver = _resolver(instance, defs)
    out = []
    for key in graph.toposorted_asset_keys:
        if not graph.get(key).is_materializable:
            continue
        status = resolver.get_status(key)
        if status in (StaleStatus.STALE, StaleStatus.MISSING):
            out.append((key, status.value))
    return out


def materialize_stale(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    include_training: bool = False,
    log: Callable[[str], None] = print,
    max_rounds: int = 50,
) -> list[dg.AssetKey]:
    """Run stale/missing assets round after round; returns every key materialized, in order."""
    job = defs.resolve_implicit_global_asset_job_def()
    ran: list[dg.AssetKey] = []
    for _ in range(max_rounds):
        todo = [(k, s) for k, s in stale_keys(instance, defs) if include_training or k not in TRAINING_KEYS]
        if not todo:
            skipped = [k for k, _ in stale_keys(instance, defs) if k in TRAINING_KEYS]
            if skipped:
                log("stale training assets left alone (pass --with-training to retrain): "
                    + ", ".join(k.to_user_string() for k in skipped))
            return ran
        keys = [k for k, _ in todo]
        why = dict(todo)
        keys = _with_model_followers(defs.resolve_asset_graph(), keys, include_training)
        log("materializing " + ", ".join(
            f"{k.to_user_string()} ({why[k].lower() if k in why else 'follows a retrained model'})" for k in keys))
        run_selection(job, instance, keys)
        ran += keys
    raise RuntimeError(f"still stale after {max_rounds} rounds; this is a bug (a cycle of changing data versions?)")


def keys_from_strings(selection: Sequence[str], defs: dg.Definitions | None = None) -> list[dg.AssetKey]:
    """Asset keys from selection strings, in pipeline order. With `defs`, Dagster's selection syntax as its own
    CLI reads it (`raw/wiki+`, `*deduped`, comma-separated clauses) or the newer one (`key:raw/wiki+`,
    `group:05_dedup`, `tag:...`); an unknown key is an error naming it."""
    if defs is None:
        return [dg.AssetKey.from_user_string(s) for s in selection]
    graph = defs.resolve_asset_graph()
    clauses = [c.strip() for s in selection for c in s.split(",") if c.strip()]
    keys: set[dg.AssetKey] = set()
    for clause in clauses:
        # the grammar reads an unquoted value that starts with a digit as a number: group:05_dedup -> "05_dedup"
        clause = re.sub(r'(group:)(\d\w*)', r'\1"\2"', clause)
        try:
            if ":" in clause:
                picked = dg.AssetSelection.from_string(clause).resolve(graph)
            else:
                picked = dg.AssetSelection.from_coercible([clause]).resolve(graph)
        except Exception as e:  # Dagster raises several error types for a selection that matches nothing
            raise ValueError(f"--select {clause!r}: {e}") from e
        if not picked:
            raise ValueError(f"--select {clause!r} matches no asset")
        keys |= set(picked)
    return [k for k in graph.toposorted_asset_keys if k in keys]


# ----------------------------------------------------------------------------- the plan: what a change makes stale


def _slice(graph: AssetGraph, key: dg.AssetKey) -> str:
    meta = graph.get(key).metadata or {}
    v = meta.get("recipe_slice")
    return getattr(v, "value", v) or "its code"


def _root_reason(resolver: CachingStaleStatusResolver, graph: AssetGraph, key: dg.AssetKey, status) -> str:
    from dagster._core.definitions.data_version import StaleCauseCategory

    if status == StaleStatus.MISSING:
        return "never materialized"
    reasons = []
    for cause in resolver.get_stale_causes(key):
        if cause.category == StaleCauseCategory.CODE:
            reasons.append(f"recipe slice `{_slice(graph, key)}` changed")
        elif cause.dependency is not None:
            reasons.append(f"parent {cause.dependency_asset_key.to_user_string()} has a new version")
        else:
            reasons.append(cause.reason)
    return "; ".join(dict.fromkeys(reasons)) or "stale"


def _reads(parents: list[dg.AssetKey]) -> str:
    return ("reads " + ", ".join(p.to_user_string() for p in parents)
            + (", which reruns" if len(parents) == 1 else ", which rerun"))


def stale_plan(instance: dg.DagsterInstance, defs: dg.Definitions) -> list[dict]:
    """Every asset a change makes stale, in run order: the stale or missing ones (`why`: which recipe slice or which
    parent version changed) and everything downstream of them (`why`: the parents in the plan it reads). Each item:
    {key, state ("stale" | "missing" | "follows"), why, training (bool)}. Training assets are listed too; whether they
    run is the caller's choice."""
    graph, resolver = _resolver(instance, defs)
    plan: dict[dg.AssetKey, dict] = {}
    for key in graph.toposorted_asset_keys:
        if not graph.get(key).is_materializable:
            continue
        status = resolver.get_status(key)
        parents = [p for p in plan if p in graph.get(key).parent_keys]  # plan order = run order
        if status in (StaleStatus.STALE, StaleStatus.MISSING):
            why = _root_reason(resolver, graph, key, status)
            if parents:
                why += "; " + _reads(parents)
            plan[key] = {"key": key, "state": status.value.lower(), "why": why, "parents": parents}
        elif parents:
            plan[key] = {"key": key, "state": "follows", "parents": parents, "why": _reads(parents)}
    for item in plan.values():
        item["training"] = item["key"] in TRAINING_KEYS
    return list(plan.values())


def runnable(plan: list[dict], include_training: bool) -> tuple[list[dict], list[dict]]:
    """(what runs, what is left alone): without training, the models, and what follows only them, stay."""
    if include_training:
        return plan, []
    left_keys: set[dg.AssetKey] = set()
    run, left = [], []
    for item in plan:
        follows_only_left = item["state"] == "follows" and all(p in left_keys for p in item["parents"])
        if item["training"] or follows_only_left:
            left_keys.add(item["key"])
            left.append(item)
        else:
            run.append(item)
    return run, left


def format_plan(plan: list[dict], include_training: bool) -> list[str]:
    run, left = runnable(plan, include_training)
    width = max([len(i["key"].to_user_string()) for i in plan] + [8])
    lines = [f"{i['state']:8s} {i['key'].to_user_string():{width}s}  {i['why']}" for i in run]
    lines += [f"{i['state']:8s} {i['key'].to_user_string():{width}s}  {i['why']} "
              + ("[training: pass --with-training]" if i["training"] else "[after a retrain]") for i in left]
    return lines
