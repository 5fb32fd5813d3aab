"""The HTTP API through the real handlers against the real test database.

Every endpoint test of tests/unit/test_api_handlers.py runs again here with `store` bound to
PostgreSQL; then the recovery scenarios end to end on both store adapters (PostgreSQL and
Supabase over a loopback PostgREST), and the races on PostgreSQL, with the database's own locks
and compare-and-set deciding.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import pytest
from deepmem.adapters.store.postgres import PostgresStore, connect_pool
from deepmem.api.app import use_run_service
from deepmem.domain.errors import BlockingRunExistsError, RunNotProceedableError
from deepmem.domain.models import BatchRecord, ChunkQuestions
from deepmem.domain.status import RunStatus
from deepmem.services.runs import RunService

from tests.api_support import api_event, call, load_function
from tests.fakes.workflow import FakeWorkflow
from tests.unit import test_api_handlers as endpoint_tests

# Every endpoint test, re-collected here: `store` below makes them run on PostgreSQL.
for _name in dir(endpoint_tests):
    if _name.startswith("test_"):
        globals()[_name] = getattr(endpoint_tests, _name)
fn = endpoint_tests.fn
workflow = endpoint_tests.workflow
service = endpoint_tests.service

P = "/v1/api/deep-memory"


@pytest.fixture
def store(postgres_store: PostgresStore) -> PostgresStore:
    return postgres_store


@pytest.fixture(params=["postgres_store", "supabase_store"])
def any_store(request: pytest.FixtureRequest) -> Any:
    """Both RunStore adapters the API can be deployed with (DATABASE_URL, SUPABASE_URL)."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def on_any_store(fn: dict[str, ModuleType], any_store: Any) -> Iterator[Any]:
    with use_run_service(RunService(any_store, FakeWorkflow(), dataset="/data/kb")):
        yield any_store


# The seed's scenarios, end to end. The fake workflow stands for the state machine; what its
# tasks would write (progress, the phase's end) is written through the same store.


def finish_generation(store: PostgresStore, run_id: UUID, chunks: int = 3) -> None:
    store.set_total_chunks(run_id, chunks, attempt=1)
    store.record_batch(
        BatchRecord(
            run_id=run_id,
            attempt=1,
            chunks=[ChunkQuestions(chunk_id=f"c{i}", questions=[f"q{i}"]) for i in range(chunks)],
        )
    )
    assert store.transition(run_id, RunStatus.GENERATING, RunStatus.GENERATED) is not None


def post(module: ModuleType, path: str, body: Any = None) -> Any:
    return call(module, api_event("POST", f"{P}{path}", body))


def get(module: ModuleType, path: str) -> Any:
    return call(module, api_event("GET", f"{P}{path}"))


def test_a_generation_failure_blocks_until_proceeded_and_completed(fn, on_any_store) -> None:
    store = on_any_store
    run_id = UUID(post(fn["runs"], "/generate").body["training_run_id"])
    store.set_total_chunks(run_id, 3, attempt=1)
    store.record_batch(
        BatchRecord(
            run_id=run_id, attempt=1, chunks=[ChunkQuestions(chunk_id="c0", questions=["q0"])]
        )
    )
    store.transition(
        run_id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED, error_message="LLM 401"
    )

    settings = get(fn["settings"], "/settings").body
    assert (settings["has_blocking_run"], settings["blocking_run_id"]) == (True, str(run_id))
    assert settings["blocking_run_status"] == "generating_failed"
    blocked = post(fn["runs"], "/generate")
    assert (blocked.status, blocked.body["blocking_run_id"]) == (409, str(run_id))

    resumed = post(fn["proceed"], "/proceed", {"training_run_id": str(run_id)})
    assert resumed.status == 202
    run = get(fn["runs"], f"/runs/{run_id}").body
    assert (run["status"], run["attempt"], run["error_message"]) == ("generating", 2, None)
    assert run["processed_chunks"] == 1  # resumes where it stopped

    store.record_batch(
        BatchRecord(
            run_id=run_id,
            attempt=2,
            chunks=[ChunkQuestions(chunk_id=f"c{i}", questions=[f"q{i}"]) for i in range(3)],
        )
    )
    store.transition(run_id, RunStatus.GENERATING, RunStatus.GENERATED)
    assert get(fn["runs"], f"/runs/{run_id}").body["pair_count"] == 3
    assert post(fn["runs"], "/train", {"training_run_id": str(run_id)}).status == 202
    store.transition(run_id, RunStatus.TRAINING, RunStatus.COMPLETED)
    assert post(fn["runs"], "/generate").status == 202


def test_a_training_failure_blocks_until_proceeded(fn, on_any_store) -> None:
    store = on_any_store
    run_id = UUID(post(fn["runs"], "/generate").body["training_run_id"])
    finish_generation(store, run_id)
    assert post(fn["runs"], "/train", {"training_run_id": str(run_id)}).status == 202
    store.set_training_job(run_id, "job-1", attempt=1)
    store.transition(run_id, RunStatus.TRAINING, RunStatus.TRAINING_FAILED, error_message="quota")

    assert post(fn["runs"], "/generate").status == 409
    assert get(fn["settings"], "/settings").body["blocking_run_status"] == "training_failed"

    resumed = post(fn["proceed"], "/proceed", {"training_run_id": str(run_id)})

    assert resumed.status == 202
    assert resumed.body["job_id"] == f"{run_id}-training-2"
    run = store.get_run(run_id)
    assert (run.status, run.attempt, run.error_message) == (RunStatus.TRAINING, 2, None)
    assert run.deeplake_job_id == "job-1"  # kept: the train task resumes polling it


def test_a_generated_run_blocks_until_trained_or_deleted(fn, on_any_store) -> None:
    store = on_any_store
    run_id = UUID(post(fn["runs"], "/generate").body["training_run_id"])
    finish_generation(store, run_id)

    blocked = post(fn["runs"], "/generate")
    assert (blocked.status, blocked.body["blocking_run_status"]) == (409, "generated")

    deleted = call(fn["delete"], api_event("DELETE", f"{P}/runs/{run_id}"))
    assert deleted.body == {"training_run_id": str(run_id), "deleted_pairs": 3}
    assert post(fn["runs"], "/generate").status == 202


def test_cancel_ends_in_the_phase_failure_and_can_be_proceeded(fn, on_any_store) -> None:
    store = on_any_store
    run_id = UUID(post(fn["runs"], "/generate").body["training_run_id"])

    assert post(fn["runs"], f"/runs/{run_id}/cancel").status == 202
    run = store.get_run(run_id)
    assert (run.status, run.error_message) == (RunStatus.GENERATING_FAILED, "cancelled")
    assert post(fn["proceed"], "/proceed", {"training_run_id": str(run_id)}).status == 202


# Races on the database


def race(count: int, call_it: Any) -> list[Any]:
    barrier = threading.Barrier(count)

    def one(_: int) -> Any:
        barrier.wait()
        try:
            return call_it()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def test_32_racing_generations_create_one_run_and_one_execution(store) -> None:
    workflow = FakeWorkflow()
    service = RunService(store, workflow, dataset="/data/kb")

    results = race(32, lambda: service.start_generation(uuid4()))

    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert sum(isinstance(r, BlockingRunExistsError) for r in results) == 31
    assert len(store.list_runs()) == 1
    assert len(workflow.start_calls) == 1


def test_32_racing_proceeds_start_one_execution(store) -> None:
    workflow = FakeWorkflow()
    service = RunService(store, workflow, dataset="/data/kb")
    run_id = service.start_generation(None).run.id
    store.transition(run_id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED, error_message="x")

    results = race(32, lambda: service.proceed(run_id))

    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert sum(isinstance(r, RunNotProceedableError) for r in results) == 31
    assert workflow.start_calls == [f"{run_id}-generating-1", f"{run_id}-generating-2"]
    assert store.get_run(run_id).attempt == 2


# Through the real handler in 32 processes, as 32 Lambda instances would call it. Forked (a
# spawned child re-imports everything: minutes on 2 cores) while the parent holds no
# connection pool and runs no Python thread; the warning counts native threads only.
FORK_WARNING = "ignore:This process .* is multi-threaded:DeprecationWarning"


def _handler_in_process(
    url: str, barrier: Any, request: tuple[str, str, Any], results: Any
) -> None:
    method, path, body = request
    store = PostgresStore(connect_pool(url, max_size=1))
    workflow = FakeWorkflow()
    with use_run_service(RunService(store, workflow, dataset="/data/kb")):
        module = load_function("proceed" if path == "/proceed" else "runs")
        barrier.wait()
        answer = call(module, api_event(method, f"{P}{path}", body))
    results.put((answer.status, len(workflow.start_calls)))
    store.close()


def in_32_processes(url: str, method: str, path: str, body: Any = None) -> list[tuple[int, int]]:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(32)
    results = context.Queue()
    workers = [
        context.Process(
            target=_handler_in_process, args=(url, barrier, (method, path, body), results)
        )
        for _ in range(32)
    ]
    for worker in workers:
        worker.start()
    answers = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    return answers


@contextmanager
def store_at(url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(connect_pool(url, max_size=1))
    try:
        yield store
    finally:
        store.close()


@pytest.mark.filterwarnings(FORK_WARNING)
def test_32_parallel_generate_requests_get_exactly_one_202(database_url) -> None:
    answers = in_32_processes(database_url, "POST", "/generate")

    assert sorted(status for status, _ in answers) == [202] + [409] * 31
    assert sum(starts for _, starts in answers) == 1
    with store_at(database_url) as store:
        assert len(store.list_runs()) == 1


@pytest.mark.filterwarnings(FORK_WARNING)
def test_32_parallel_proceed_requests_start_exactly_one_execution(database_url) -> None:
    with store_at(database_url) as store:
        run = store.create_run("/data/kb", None)
        store.transition(
            run.id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED, error_message="x"
        )

    answers = in_32_processes(database_url, "POST", "/proceed", {"training_run_id": str(run.id)})

    assert sorted(status for status, _ in answers) == [202] + [409] * 31
    assert sum(starts for _, starts in answers) == 1
    with store_at(database_url) as store:
        assert store.get_run(run.id).attempt == 2
