"""Asset-check logic: did bits-per-byte regress against the previous evaluation?

`bpb_regressed` compares two sets of numbers; `bpb_check` decides first whether they may be compared at all: only
when the previous evaluation's model of the same label had a comparable lineage (same tokenizer, same val data
per split, same val_max_rows — see `comparable`). A tokenizer change without retraining, or an older metrics.json
without lineage, passes with a "no comparable baseline: ..." note and starts a new baseline."""

from __future__ import annotations

from typing import Any


def bpb_regressed(current: dict[str, dict[str, Any]], previous: dict[str, dict[str, Any]] | None,
                  threshold: float) -> tuple[bool, dict[str, Any]]:
    """(passed, details) comparing per-domain bits_per_byte of two val_metrics results.

    A domain regresses when current > previous * (1 + threshold). Domains missing on either side (or without a
    bpb) are listed but not judged; no previous result passes. details: {"threshold", "regressed": [domains],
    "domains": {domain: {current, previous, relative_change, regressed}}, "note"}."""
    details: dict[str, Any] = {"threshold": threshold, "regressed": [], "domains": {}}
    if not previous:
        details["note"] = "no previous evaluation to compare with"
        return True, details
    for domain in sorted(set(current) | set(previous)):
        cur = (current.get(domain) or {}).get("bits_per_byte")
        prev = (previous.get(domain) or {}).get("bits_per_byte")
        row: dict[str, Any] = {"current": cur, "previous": prev, "relative_change": None, "regressed": False}
        if cur is not None and prev is not None and prev > 0:
            row["relative_change"] = cur / prev - 1.0
            row["regressed"] = cur > prev * (1.0 + threshold)
            if row["regressed"]:
                details["regressed"].append(domain)
        details["domains"][domain] = row
    judged = [d for d, r in details["domains"].items() if r["relative_change"] is not None]
    details["note"] = f"{len(judged)} domain(s) compared, {len(details['regressed'])} regressed past +{threshold:.1%}"
    return not details["regressed"], details


# ----------------------------------------------------------------------------- comparable baselines


def flat_bpb(model_metrics: dict[str, dict]) -> dict[str, dict]:
    """{"<split>/<domain>": metrics} and {"<split>/all": overall} for one model, the unit the check compares."""
    out = {}
    for split, m in model_metrics.items():
        for d, r in m["domains"].items():
            out[f"{split}/{d}"] = r
        out[f"{split}/all"] = m["overall"]
    return out


def _same(a_version, b_version, a_sha, b_sha) -> bool | None:
    """Same content? By content hash when both sides have one, else by version id; None when unknown."""
    if a_sha and b_sha:
        return a_sha == b_sha
    if a_version and b_version:
        return a_version == b_version
    return None


def comparable(current: dict[str, Any], previous: dict[str, Any] | None,
               prev_val_max_rows: int | None = None, val_max_rows: int | None = None) -> tuple[bool, list[str]]:
    """(comparable, reasons it is not) for the lineage of one model now and in the previous evaluation.

    Bits-per-byte of two evaluations are comparable when the model used the same tokenizer and was scored on the
    same val data for every split (and the same number of val rows); the model itself may differ — that is what
    the check is for. Unknown values (an older metrics.json without lineage, plain folders) are not comparable."""
    from plasma_pipeline.evaluate.lineage import short

    if not previous:
        return False, ["the previous evaluation recorded no lineage (older metrics.json format)"]
    reasons = []
    same_tok = _same(current.get("tokenizer_version"), previous.get("tokenizer_version"),
                     current.get("tokenizer_sha256"), previous.get("tokenizer_sha256"))
    if same_tok is None:
        reasons.append("tokenizer version unknown")
    elif not same_tok:
        prev_tok = short(previous.get("tokenizer_version"), previous.get("tokenizer_sha256"))
        now_tok = short(current.get("tokenizer_version"), current.get("tokenizer_sha256"))
        reasons.append(f"tokenizer changed (prev {prev_tok}, now {now_tok})")
    cur_val, prev_val = current.get("val_data") or {}, previous.get("val_data") or {}
    if set(cur_val) != set(prev_val):
        reasons.append(f"val splits differ (prev {', '.join(sorted(prev_val)) or 'none'}, "
                       f"now {', '.join(sorted(cur_val)) or 'none'})")
    for split in sorted(set(cur_val) & set(prev_val)):
        c, p = cur_val[split] or {}, prev_val[split] or {}
        same = _same(c.get("version"), p.get("version"), c.get("sha256"), p.get("sha256"))
        if same is None:
            reasons.append(f"{split} data version unknown")
        elif not same:
            reasons.append(f"{split} data changed (prev {c.get('asset') or 'shards'} "
                           f"{short(p.get('version'), p.get('sha256'))}, "
                           f"now {short(c.get('version'), c.get('sha256'))})")
    if prev_val_max_rows is not None and val_max_rows is not None and prev_val_max_rows != val_max_rows:
        reasons.append(f"val_max_rows changed (prev {prev_val_max_rows}, now {val_max_rows})")
    return not reasons, reasons


def same_model(current: dict[str, Any], previous: dict[str, Any] | None) -> bool:
    """The very same weights (content hash, else version id) as the previous evaluation's model."""
    if not previous:
        return False
    return bool(_same(current.get("model_version"), previous.get("model_version"),
                      current.get("weights_sha256"), previous.get("weights_sha256")))


def bpb_check(label: str, metrics: dict[str, dict], lineage: dict[str, Any], previous: dict | None,
              threshold: float, val_max_rows: int | None = None) -> tuple[bool, str, dict[str, Any]]:
    """(passed, description, details) of the `<label>_bpb_no_regression` check.

    previous: the previous evaluation's metrics.json (dict) or None. The model is compared only against a previous
    evaluation of the same label whose lineage is comparable (see `comparable`); otherwise the check passes,
    saying why there is no comparable baseline, and this evaluation becomes the baseline (details["baseline"] ==
    "new"). The same weights on the same val data must give the same numbers, so that passes too (any difference
    is reported: it means the evaluation code, config or device changed, not the model)."""
    from plasma_pipeline.evaluate.lineage import short

    head = f"{label} model: bits-per-byte within +{threshold:.0%} of the previous evaluation; "
    cur = flat_bpb(metrics)
    prev_doc = previous or {}
    prev_metrics = (prev_doc.get("metrics", prev_doc) or {}).get(label) if previous else None
    prev_lineage = (prev_doc.get("lineage") or {}).get(label) if previous else None
    base_details: dict[str, Any] = {"threshold": threshold, "regressed": [], "domains": {}, "lineage": lineage,
                                    "previous_lineage": prev_lineage}

    def new_baseline(reason: str) -> tuple[bool, str, dict[str, Any]]:
        note = f"no comparable baseline: {reason}; this evaluation establishes a new baseline"
        return True, f"{label} model: {note}", {**base_details, "note": note, "baseline": "new", "comparable": False}

    if not previous:
        return new_baseline("no previous evaluation")
    if not prev_metrics:
        return new_baseline(f"the previous evaluation has no {label} model")
    prev_rows = (prev_doc.get("config") or {}).get("val_max_rows")
    ok, reasons = comparable(lineage, prev_lineage, prev_rows, val_max_rows)
    if not ok:
        return new_baseline("; ".join(reasons))
    passed, details = bpb_regressed(cur, flat_bpb(prev_metrics), threshold)
    details = {**base_details, **details, "baseline": "previous", "comparable": True}
    if same_model(lineage, prev_lineage):
        changes = [abs(r["relative_change"]) for r in details["domains"].values() if r["relative_change"] is not None]
        drift = max(changes, default=0.0)
        note = (f"same {lineage.get('model_asset') or label} version "
                f"{short(lineage.get('model_version'), lineage.get('weights_sha256'))} on the same val data as the "
                f"previous evaluation: nothing to regress")
        if drift > 1e-6:
            note += (f"; but its numbers moved by up to {drift:.2e} relative (evaluation code, config or device "
                     f"changed, not the model)")
        details.update({"note": note, "same_model": True, "regressed_if_judged": details["regressed"],
                        "regressed": []})
        return True, head + note, details
    details["same_model"] = False
    desc = head + details["note"] + (f"; regressed: {', '.join(details['regressed'])}" if details["regressed"] else "")
    return passed, desc, details
