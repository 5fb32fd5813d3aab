"""Mapping Activeloop's job JSON (shapes from deeplake 3.9's own client tests) to JobStatus."""

from __future__ import annotations

import pytest
from deepmem.adapters.trainers.deep_memory import parse_status
from deepmem.ports import JobState


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("pending", JobState.PENDING),
        ("queued", JobState.PENDING),
        ("training", JobState.TRAINING),
        ("completed", JobState.COMPLETED),
        ("failed", JobState.FAILED),
        ("cancelled", JobState.FAILED),
        ("something new", JobState.PENDING),
    ],
)
def test_states(raw: str, state: JobState) -> None:
    assert parse_status({"status": raw, "progress": None}, "j").state is state


@pytest.mark.parametrize("best", ["85.5% (+2.6)%", "85.5% (+2.6%)"])
def test_completed_metrics_from_both_best_recall_spellings(best: str) -> None:
    status = parse_status(
        {
            "status": "completed",
            "progress": {"best_recall@10": best, "base_val_recall@10": 0.8292181491851807},
        },
        "j1",
    )
    assert status.metrics["recall_after"] == {"recall@10": 0.855}
    assert status.metrics["recall_before"] == {"recall@10": 0.8292}
    assert status.metrics["improvement_points@10"] == 2.6
    assert status.metrics["trainer"] == "deep_memory" and status.metrics["job_id"] == "j1"
    # Its numbers are recorded, but deepmem cannot tell whether it is applied: never "true".
    guard = status.metrics["guard"]
    assert status.metrics["applied"] is None and guard["applied"] is None
    assert guard["before"] == {"recall@10": 0.8292} and guard["after"] == {"recall@10": 0.855}


def test_failed_keeps_the_service_error_or_says_it_had_none() -> None:
    failed = parse_status(
        {"status": "failed", "progress": {"error": "list indices must be integers"}}, "j"
    )
    assert failed.error == "list indices must be integers"
    silent = parse_status({"status": "cancelled", "progress": None}, "j2")
    assert silent.error is not None and "j2" in silent.error and "cancelled" in silent.error
