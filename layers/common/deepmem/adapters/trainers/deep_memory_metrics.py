"""What a completed Deep Memory job reports, as a run's metrics (its recall before → after,
recorded as the guard's numbers with `applied: null`: deepmem cannot hold its model back)."""

from __future__ import annotations

import re
from typing import Any

# "85.5% (+2.6)%" or "85.5% (+2.6%)": the recall@10 of the best model and its gain in points.
_BEST_RECALL = re.compile(r"^\s*([\d.]+)%\s*\(([+-]?[\d.]+)\)?%?\)?\s*$")


def completed_metrics(progress: dict[str, Any], job_id: str) -> dict[str, Any]:
    metrics: dict[str, Any] = {"trainer": "deep_memory", "job_id": job_id}
    best = progress.get("best_recall@10")
    if isinstance(best, str):
        metrics["best_recall@10"] = best
        match = _BEST_RECALL.match(best)
        if match:
            metrics["recall_after"] = {"recall@10": round(float(match.group(1)) / 100, 4)}
            metrics["improvement_points@10"] = float(match.group(2))
    base = progress.get("base_val_recall@10")
    if isinstance(base, int | float):
        metrics["recall_before"] = {"recall@10": round(float(base), 4)}
    # Deep Memory's model serves searches made with deep_memory=True once its job completes:
    # deepmem has no held-out verdict of its own here, so it never claims one (see README).
    metrics["applied"] = None
    metrics["guard"] = {
        "applied": None,
        "reason": "Deep Memory uses its model once the job completes; deepmem cannot hold it back",
        "before": metrics.get("recall_before", {}),
        "after": metrics.get("recall_after", {}),
    }
    return metrics
