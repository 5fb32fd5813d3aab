"""The guard's record of a run (`metrics.guard`) as rows for the CLI's tables."""

from __future__ import annotations

from typing import Any

GUARD_METRICS = ("recall@1", "recall@5", "recall@10", "ndcg@10")


def applied_label(metrics: dict[str, Any]) -> str:
    """yes / no / unknown (Deep Memory), or "" for a run the guard never saw."""
    if "guard" not in metrics:
        return ""
    return {True: "yes", False: "no"}.get(metrics["guard"].get("applied"), "unknown")


def guard_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows: each metric before → after (and the previous active's), then
    whether the adapter was applied and why."""
    guard = metrics.get("guard")
    if not guard:
        return []
    before, after = guard.get("before", {}), guard.get("after", {})
    previous = guard.get("previous") or {}
    rows = []
    for name in GUARD_METRICS:
        if name in before and name in after:
            value = f"{before[name]:.3f} → {after[name]:.3f} ({after[name] - before[name]:+.3f})"
            if name in previous:
                value += f"; active before: {previous[name]:.3f}"
            rows.append((f"{name} (guard, {guard.get('questions', '?')} held-out)", value))
    rows.append(("adapter applied", f"{applied_label(metrics)}: {guard.get('reason', '')}"))
    return rows
