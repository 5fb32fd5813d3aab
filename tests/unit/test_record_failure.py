"""record_failure: the Catch target and the EventBridge safety net, over an in-memory store."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import uuid4

import pytest
from deepmem.domain.errors import NotOurExecutionError
from deepmem.domain.executions import parse_execution_name
from deepmem.domain.models import TrainingRun
from deepmem.domain.status import Phase, RunStatus
from deepmem.services.failures import ERROR_MESSAGE_LIMIT, describe_error
from pydantic import ValidationError

from tests.fakes import events
from tests.fakes.memory_store import MemoryRunStore

ROOT = Path(__file__).resolve().parents[2]
ARN = events.STATE_MACHINE_ARN


def _load() -> ModuleType:
    path = ROOT / "functions" / "record_failure" / "app.py"
    spec = importlib.util.spec_from_file_location("deepmem_function_record_failure", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app = _load()


@pytest.fixture
def store() -> MemoryRunStore:
    return MemoryRunStore()


def generating(store: MemoryRunStore) -> TrainingRun:
    return store.create_run("hub://org/kb", None)


def training(store: MemoryRunStore) -> TrainingRun:
    run = generating(store)
    store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATED)
    moved = store.transition(run.id, RunStatus.GENERATED, RunStatus.TRAINING)
    assert moved is not None
    return moved


def handle(event: dict[str, Any], store: MemoryRunStore, arn: str | None = ARN) -> dict[str, Any]:
    result: dict[str, Any] = app.handle(event, store, arn)
    return result


# ---------------------------------------------------------------- from the Catch


def test_a_caught_generation_error_fails_the_run_with_a_readable_message(
    store: MemoryRunStore,
) -> None:
    run = generating(store)
    event = events.failure_caught(
        run.id,
        Phase.GENERATING,
        1,
        "GenerationError",
        events.lambda_error_cause("GenerationError", "401: invalid API key"),
    )

    result = handle(event, store)

    assert result["recorded"] is True and result["status"] == "generating_failed"
    failed = store.get_run(run.id)
    assert failed.status is RunStatus.GENERATING_FAILED
    assert failed.error_message == "GenerationError: 401: invalid API key"


def test_a_caught_training_error_fails_the_training_phase(store: MemoryRunStore) -> None:
    run = training(store)
    event = events.failure_caught(
        run.id,
        Phase.TRAINING,
        run.attempt,
        "TrainingError",
        events.lambda_error_cause("TrainingError", "job 42 failed"),
    )

    handle(event, store)

    assert store.get_run(run.id).status is RunStatus.TRAINING_FAILED
    assert store.get_run(run.id).error_message == "TrainingError: job 42 failed"


def test_never_overwrites_a_later_state(store: MemoryRunStore) -> None:
    run = generating(store)
    store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATED)

    result = handle(events.failure_caught(run.id, Phase.GENERATING, 1), store)

    assert result == result | {"recorded": False, "skipped": "not_active"}
    assert store.get_run(run.id).status is RunStatus.GENERATED
    assert store.get_run(run.id).error_message is None


def test_a_second_report_keeps_the_first_error(store: MemoryRunStore) -> None:
    run = generating(store)
    first = events.failure_caught(
        run.id, Phase.GENERATING, 1, "DatasetError", events.lambda_error_cause("DatasetError", "a")
    )
    handle(first, store)
    handle(events.execution_status_change(run.id, Phase.GENERATING, 1, "FAILED"), store)

    assert store.get_run(run.id).error_message == "DatasetError: a"


def test_the_wrong_phase_changes_nothing(store: MemoryRunStore) -> None:
    run = generating(store)

    result = handle(events.failure_caught(run.id, Phase.TRAINING, 1, "TrainingError"), store)

    assert result["recorded"] is False
    assert store.get_run(run.id).status is RunStatus.GENERATING


def test_an_older_attempt_never_fails_the_current_one(store: MemoryRunStore) -> None:
    run = generating(store)
    store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED)
    store.transition(run.id, RunStatus.GENERATING_FAILED, RunStatus.GENERATING, next_attempt=True)

    result = handle(events.failure_caught(run.id, Phase.GENERATING, 1), store)

    assert result["skipped"] == "stale_attempt"
    assert store.get_run(run.id).status is RunStatus.GENERATING


def test_a_deleted_run_is_ignored(store: MemoryRunStore) -> None:
    result = handle(events.failure_caught(uuid4(), Phase.GENERATING, 1), store)
    assert result == result | {"recorded": False, "skipped": "not_found"}


def test_a_malformed_catch_event_is_refused(store: MemoryRunStore) -> None:
    with pytest.raises(ValidationError):
        handle({"source": "catch", "run_id": "not-a-uuid", "phase": "generating"}, store)


# ---------------------------------------------------------------- from EventBridge


@pytest.mark.parametrize(
    ("status", "message"), [("ABORTED", "cancelled"), ("TIMED_OUT", "timed out")]
)
def test_an_execution_that_ended_without_a_catch_fails_the_run(
    store: MemoryRunStore, status: str, message: str
) -> None:
    run = training(store)

    result = handle(
        events.execution_status_change(run.id, Phase.TRAINING, run.attempt, status), store
    )

    assert result["recorded"] is True
    assert store.get_run(run.id).status is RunStatus.TRAINING_FAILED
    assert store.get_run(run.id).error_message == message


def test_a_failed_execution_keeps_its_error_and_cause(store: MemoryRunStore) -> None:
    run = generating(store)
    event = events.execution_status_change(
        run.id,
        Phase.GENERATING,
        1,
        "FAILED",
        error="States.Runtime",
        cause="An error occurred while executing the state 'Plan'.",
    )

    handle(event, store)

    assert store.get_run(run.id).error_message == (
        "States.Runtime: An error occurred while executing the state 'Plan'."
    )


def test_another_state_machines_event_is_ignored(store: MemoryRunStore) -> None:
    run = generating(store)
    event = events.execution_status_change(
        run.id,
        Phase.GENERATING,
        1,
        "ABORTED",
        state_machine_arn=ARN.replace("deepmem-training", "someone-else"),
    )

    result = handle(event, store)

    assert result["skipped"] == "other_state_machine"
    assert store.get_run(run.id).status is RunStatus.GENERATING


def test_any_state_machine_counts_when_none_is_configured(store: MemoryRunStore) -> None:
    run = generating(store)
    event = events.execution_status_change(
        run.id, Phase.GENERATING, 1, "ABORTED", state_machine_arn=ARN.replace("deepmem", "local")
    )

    assert handle(event, store, arn=None)["recorded"] is True


def test_an_execution_not_named_by_us_is_ignored(store: MemoryRunStore) -> None:
    event = events.execution_status_change(name="manual-test-run", status="FAILED")
    assert handle(event, store)["skipped"] == "foreign_execution"


def test_a_succeeded_execution_is_not_a_failure(store: MemoryRunStore) -> None:
    run = generating(store)
    result = handle(events.execution_status_change(run.id, status="SUCCEEDED"), store)
    assert result["skipped"] == "not_a_failure"
    assert store.get_run(run.id).status is RunStatus.GENERATING


def test_the_sample_events_are_understood(store: MemoryRunStore) -> None:
    for name in ("record_failure_catch", "record_failure_aborted", "record_failure_timed_out"):
        sample = json.loads((ROOT / "events" / f"{name}.json").read_text())
        assert handle(sample, store)["skipped"] == "not_found"


# ---------------------------------------------------------------- the Lambda entry point


def test_the_handler_reads_its_store_and_machine_from_the_configuration(
    store: MemoryRunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = generating(store)
    monkeypatch.setattr(app, "_store", lambda: store)
    monkeypatch.setenv("STATE_MACHINE_ARN", ARN)
    app.load_config.cache_clear()
    try:
        from deepmem.local.workflow import LocalLambdaContext

        context = LocalLambdaContext(function_name="record_failure", timeout_seconds=60)
        result = app.handler(events.execution_status_change(run.id, status="ABORTED"), context)
    finally:
        app.load_config.cache_clear()

    assert result["recorded"] is True
    assert store.get_run(run.id).error_message == "cancelled"


# ---------------------------------------------------------------- the pieces


def test_execution_names_round_trip() -> None:
    run_id = uuid4()
    assert parse_execution_name(f"{run_id}-training-12") == (run_id, Phase.TRAINING, 12)
    for name in ("x-training-1", f"{run_id}-deploying-1", f"{run_id}-training", "", f"{run_id}"):
        with pytest.raises(NotOurExecutionError):
            parse_execution_name(name)


def test_error_messages_are_readable_and_bounded() -> None:
    assert describe_error("TrainingError", '{"errorMessage": " boom ", "stackTrace": []}') == (
        "TrainingError: boom"
    )
    assert describe_error("States.Timeout", "not json {") == "States.Timeout: not json {"
    assert describe_error("States.Timeout", None) == "States.Timeout"
    assert describe_error(None, "") == "Error"
    assert describe_error("X", "{broken json") == "X: {broken json"
    long = describe_error("GenerationError", "y" * 5000)
    assert len(long) == ERROR_MESSAGE_LIMIT and long.endswith("…")
