"""The train Lambda handler: event validation, response shape, errors, run id on every line."""

from __future__ import annotations

import io
import json
import logging
from typing import Any
from uuid import uuid4

import pytest
from deepmem.domain.errors import TrainingError
from deepmem.domain.models import BatchRecord, ChunkQuestions
from deepmem.domain.status import RunStatus
from deepmem.local.functions import load_function
from deepmem.ports import JobState, JobStatus
from deepmem.services.training import TrainingService
from pydantic import ValidationError

from tests.fakes.memory_store import MemoryRunStore
from tests.fakes.trainer import ScriptedTrainer

app = load_function("train")


def _service(trainer: ScriptedTrainer) -> tuple[TrainingService, str]:
    store = MemoryRunStore()
    run = store.create_run("/data/ds", None)
    store.set_total_chunks(run.id, 3, attempt=1)
    store.record_batch(
        BatchRecord(
            run_id=run.id,
            attempt=1,
            chunks=[ChunkQuestions(chunk_id=f"c{i}", questions=[f"q{i}?"]) for i in range(3)],
        )
    )
    store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATED)
    store.transition(run.id, RunStatus.GENERATED, RunStatus.TRAINING)
    return TrainingService(store, lambda kind, run, model: trainer), str(run.id)


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_submit_then_check_until_completed() -> None:
    # Powertools' handler holds the stdout it saw at import: read its lines from our own stream.
    stream = io.StringIO()
    extra = logging.StreamHandler(stream)
    extra.setFormatter(app.logger.registered_formatter)
    app.logger.addHandler(extra)
    service, run_id = _service(ScriptedTrainer(job_prefix="adapter"))
    submitted = app.handle({"action": "submit", "run_id": run_id, "attempt": 1}, service)
    assert set(submitted) == {"run_id", "job_id", "state", "wait_seconds", "poll"}
    assert submitted["run_id"] == run_id and submitted["state"] == "pending"
    event = {"action": "check", "run_id": run_id, "attempt": 1, "job_id": submitted["job_id"]}
    assert app.handle(event, service)["state"] == "pending"
    done = app.handle(event, service)
    assert done == {
        "run_id": run_id,
        "job_id": submitted["job_id"],
        "state": "completed",
        "wait_seconds": 0,
        "poll": 1,
    }
    app.logger.removeHandler(extra)
    lines = _lines(stream.getvalue())
    assert len(lines) == 4
    assert lines and all(line["run_id"] == run_id for line in lines)
    assert all(line["phase"] == "training" and line["attempt"] == 1 for line in lines)


def test_a_failed_job_propagates_a_training_error() -> None:
    service, run_id = _service(ScriptedTrainer([JobStatus(JobState.FAILED, error="bad data")]))
    job = app.handle({"action": "submit", "run_id": run_id, "attempt": 1}, service)["job_id"]
    with pytest.raises(TrainingError, match="bad data") as info:
        app.handle({"action": "check", "run_id": run_id, "attempt": 1, "job_id": job}, service)
    assert type(info.value).__name__ == "TrainingError"  # the ASL error name


@pytest.mark.parametrize(
    "event",
    [
        {"action": "check", "run_id": str(uuid4()), "attempt": 1},
        {"action": "train", "run_id": str(uuid4()), "attempt": 1},
        {"action": "submit", "run_id": "not-a-uuid", "attempt": 1},
        {"action": "submit", "run_id": str(uuid4()), "attempt": 0},
    ],
)
def test_malformed_events_are_refused(event: dict[str, Any]) -> None:
    service, _ = _service(ScriptedTrainer())
    with pytest.raises(ValidationError):
        app.handle(event, service)
