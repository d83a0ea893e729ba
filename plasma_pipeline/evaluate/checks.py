"""Asset-check logic: did bits-per-byte regress against the previous evaluation?"""

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
