"""RunService with the in-memory fakes: ordering of store and workflow calls, races."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID, uuid4

import pytest
from deepmem.domain.errors import (
    BlockingRunExistsError,
    InvalidSettingsError,
    RunNotCancellableError,
    RunNotProceedableError,
    WorkflowError,
)
from deepmem.domain.models import Settings, SettingsUpdate, TrainerKind
from deepmem.domain.status import Phase, RunStatus
from deepmem.domain.trainers import effective_trainer
from deepmem.services.runs import RunService

from tests.fakes.memory_store import MemoryRunStore
from tests.fakes.workflow import FakeWorkflow


@pytest.fixture
def store() -> MemoryRunStore:
    return MemoryRunStore()


@pytest.fixture
def workflow() -> FakeWorkflow:
    return FakeWorkflow()


@pytest.fixture
def service(store: MemoryRunStore, workflow: FakeWorkflow) -> RunService:
    return RunService(store, workflow, dataset="/data/kb")


def race(count: int, call: Callable[[], Any]) -> list[Any]:
    """Run `call` from `count` threads released together; results or raised errors."""
    barrier = threading.Barrier(count)

    def one(_: int) -> Any:
        barrier.wait()
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def test_racing_generations_create_one_run(service, store, workflow) -> None:
    results = race(32, lambda: service.start_generation(uuid4()))

    started = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, BlockingRunExistsError)]
    assert len(started) == 1 and len(refused) == 31
    assert {e.blocking_run_id for e in refused} == {str(started[0].run.id)}
    assert len(workflow.started) == 1


def test_racing_proceeds_start_one_execution(service, store, workflow) -> None:
    run = service.start_generation(None).run
    store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED, error_message="x")

    results = race(32, lambda: service.proceed(run.id))

    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert sum(isinstance(r, RunNotProceedableError) for r in results) == 31
    assert workflow.started == [f"{run.id}-generating-1", f"{run.id}-generating-2"]
    assert store.get_run(run.id).attempt == 2


def test_an_engine_error_on_stop_keeps_the_run_active(service, store, workflow) -> None:
    run_id: UUID = service.start_generation(None).run.id

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise WorkflowError("throttled")

    workflow.stop = refuse

    with pytest.raises(WorkflowError):
        service.cancel(run_id)

    # Not marked failed while the execution may still run: a proceed could otherwise start a
    # second one beside it. The admin retries, or aborts it in the console.
    assert store.get_run(run_id).status is RunStatus.GENERATING


def test_cancel_of_an_orphan_marks_it_failed_without_stopping(service, store, workflow) -> None:
    run_id: UUID = service.start_generation(None).run.id
    workflow.executions.clear()  # the engine lost the execution (a local process died)

    cancelled = service.cancel(run_id)

    assert (cancelled.run.status, cancelled.run.error_message) == (
        RunStatus.GENERATING_FAILED,
        "cancelled",
    )
    assert workflow.stops == []


def test_cancel_after_the_safety_net_already_wrote_the_failure(service, store, workflow) -> None:
    run_id = service.start_generation(None).run.id
    original_stop = workflow.stop

    def stop_and_record(run_id: UUID, phase: Any, attempt: int, cause: str) -> None:
        original_stop(run_id, phase, attempt, cause)
        # EventBridge → record_failure gets there first.
        store.transition(
            run_id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED, error_message=cause
        )

    workflow.stop = stop_and_record

    stopped = service.cancel(run_id)

    assert stopped.run.status is RunStatus.GENERATING_FAILED
    assert stopped.run.error_message == "cancelled"


def test_cancel_needs_an_active_run(service, store) -> None:
    run_id = service.start_generation(None).run.id
    store.transition(run_id, RunStatus.GENERATING, RunStatus.GENERATED)

    with pytest.raises(RunNotCancellableError):
        service.cancel(run_id)


@pytest.mark.parametrize(
    ("setting", "dataset", "expected"),
    [
        (TrainerKind.AUTO, "hub://org/kb", TrainerKind.DEEP_MEMORY),
        (TrainerKind.AUTO, "/data/kb", TrainerKind.FEEDBACK_ADAPTER),
        (TrainerKind.QUERY_ADAPTER, "hub://org/kb", TrainerKind.QUERY_ADAPTER),
        (TrainerKind.QUERY_ADAPTER, "/data/kb", TrainerKind.QUERY_ADAPTER),
        (TrainerKind.FEEDBACK_ADAPTER, "hub://org/kb", TrainerKind.FEEDBACK_ADAPTER),
        (TrainerKind.DEEP_MEMORY, "hub://org/kb", TrainerKind.DEEP_MEMORY),
        (TrainerKind.DEEP_MEMORY, "/data/kb", None),
    ],
)
def test_effective_trainer(setting, dataset, expected) -> None:
    assert effective_trainer(Settings(trainer=setting), dataset) is expected


def test_deep_memory_cannot_be_chosen_for_a_local_dataset(service, store) -> None:
    with pytest.raises(InvalidSettingsError):
        service.update_settings(SettingsUpdate(trainer=TrainerKind.DEEP_MEMORY))

    assert store.get_settings().trainer is TrainerKind.AUTO


def test_an_orphan_is_failed_with_its_phases_status(service, store, workflow) -> None:
    run_id: UUID = service.start_generation(None).run.id
    workflow.executions.clear()  # its process ended: the local engine lost the execution

    failed = service.fail_if_orphaned(run_id)

    assert failed.status is RunStatus.GENERATING_FAILED
    assert failed.error_message is not None and "no longer exists" in failed.error_message
    assert workflow.stops == []


def test_a_run_whose_execution_lives_is_no_orphan(service, store, workflow) -> None:
    run_id: UUID = service.start_generation(None).run.id

    assert service.fail_if_orphaned(run_id).status is RunStatus.GENERATING
    assert store.get_run(run_id).status is RunStatus.GENERATING


def test_a_run_that_is_not_active_is_left_as_it_is(service, store, workflow) -> None:
    run_id: UUID = service.start_generation(None).run.id
    service.cancel(run_id)
    workflow.executions.clear()

    left = service.fail_if_orphaned(run_id)

    assert (left.status, left.error_message) == (RunStatus.GENERATING_FAILED, "cancelled")


def test_a_run_whose_lease_expired_is_failed_with_its_phases_status(service, store) -> None:
    run_id: UUID = service.start_generation(None).run.id
    assert store.renew_lease(run_id, 1, "killed-process", 0.0)

    failed = service.fail_lost_local_runs(store)

    assert [run.id for run in failed] == [run_id]
    run = store.get_run(run_id)
    assert run.status is RunStatus.GENERATING_FAILED
    assert run.error_message is not None
    assert "local deepmem process" in run.error_message
    assert f"deepmem proceed {run_id}" in run.error_message


def test_a_training_run_whose_lease_expired_is_training_failed(service, store) -> None:
    run = store.create_run("/data/kb", None)
    store.set_total_chunks(run.id, 0, attempt=1)
    store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATED)
    store.transition(run.id, RunStatus.GENERATED, RunStatus.TRAINING)
    assert store.renew_lease(run.id, 1, "killed-process", 0.0)

    service.fail_lost_local_runs(store)

    assert store.get_run(run.id).status is RunStatus.TRAINING_FAILED


def test_a_live_lease_and_a_run_without_one_are_left_running(service, store) -> None:
    leased: UUID = service.start_generation(None).run.id
    assert store.renew_lease(leased, 1, "alive", 60.0)

    assert service.fail_lost_local_runs(store) == []
    assert store.get_run(leased).status is RunStatus.GENERATING


def test_the_sweep_never_fails_a_newer_attempt(service, store) -> None:
    """The compare-and-set is on the attempt: a run proceeded meanwhile is left as it is."""
    run_id: UUID = service.start_generation(None).run.id
    assert store.renew_lease(run_id, 1, "killed-process", 0.0)
    expired = store.expired_leases()
    store.transition(run_id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED)
    store.transition(run_id, RunStatus.GENERATING_FAILED, RunStatus.GENERATING, next_attempt=True)

    for run in expired:  # what a sweep read just before the proceed
        service._fail(run, Phase.GENERATING, "late")

    assert store.get_run(run_id).status is RunStatus.GENERATING
    assert store.get_run(run_id).attempt == 2
