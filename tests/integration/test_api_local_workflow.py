"""The API driving the real ASL on the local workflow (moto's interpreter), on PostgreSQL.

The task handlers are the scripted ones of test_workflow_local (they keep the handlers'
contract and write the phase ends through the store); record_failure is the real one. What
is checked here is the API's side: starts, cancel (stop + the safety net), proceed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any
from uuid import UUID

import pytest
from deepmem.adapters.store.postgres import PostgresStore
from deepmem.api.app import use_run_service
from deepmem.domain.errors import GenerationError
from deepmem.domain.status import Phase
from deepmem.local.workflow import LocalWorkflow
from deepmem.ports import ExecutionState
from deepmem.services.runs import RunService

from tests.api_support import api_event, call, load_function
from tests.integration.test_workflow_local import Script

P = "/v1/api/deep-memory"


@pytest.fixture(scope="module")
def fn() -> dict[str, ModuleType]:
    return {name: load_function(name) for name in ("runs", "proceed", "delete", "settings")}


@pytest.fixture
def script(postgres_store: PostgresStore) -> Script:
    return Script(store=postgres_store)  # type: ignore[arg-type]


@pytest.fixture
def workflow(script: Script) -> Iterator[LocalWorkflow]:
    with LocalWorkflow(
        {
            "GenerateBatchFunction": script.generate,
            "TrainFunction": script.train,
            "RecordFailureFunction": script.record,
        }
    ) as local:
        yield local


@pytest.fixture
def api(postgres_store: PostgresStore, workflow: LocalWorkflow) -> Iterator[RunService]:
    with use_run_service(RunService(postgres_store, workflow, dataset="/data/kb")) as service:
        yield service


def post(module: ModuleType, path: str, body: Any = None) -> Any:
    return call(module, api_event("POST", f"{P}{path}", body))


def run_of(fn: dict[str, ModuleType], run_id: UUID) -> dict[str, Any]:
    answer = call(fn["runs"], api_event("GET", f"{P}/runs/{run_id}"))
    assert answer.status == 200
    return answer.body


def test_generate_then_train_to_completion(fn, api, workflow) -> None:
    started = post(fn["runs"], "/generate")
    run_id = UUID(started.body["training_run_id"])
    assert workflow.wait(run_id, Phase.GENERATING, 1).state is ExecutionState.SUCCEEDED
    assert run_of(fn, run_id)["status"] == "generated"

    trained = post(fn["runs"], "/train", {"training_run_id": str(run_id)})
    assert trained.status == 202
    assert workflow.wait(run_id, Phase.TRAINING, 1).state is ExecutionState.SUCCEEDED
    assert run_of(fn, run_id)["status"] == "completed"

    assert post(fn["runs"], "/generate").status == 202


def test_cancel_stops_the_execution_and_the_run_can_proceed(fn, api, workflow, script) -> None:
    script.gate = threading.Event()  # hold the plan step until cancelled
    run_id = UUID(post(fn["runs"], "/generate").body["training_run_id"])
    assert script.entered.wait(10)

    cancelled = post(fn["runs"], f"/runs/{run_id}/cancel")
    script.gate.set()

    assert cancelled.status == 202
    assert workflow.wait(run_id, Phase.GENERATING, 1).state is ExecutionState.ABORTED
    run = run_of(fn, run_id)
    assert (run["status"], run["error_message"]) == ("generating_failed", "cancelled")

    script.gate = None
    resumed = post(fn["proceed"], "/proceed", {"training_run_id": str(run_id)})
    assert resumed.body["job_id"] == f"{run_id}-generating-2"
    assert workflow.wait(run_id, Phase.GENERATING, 2).state is ExecutionState.SUCCEEDED
    assert run_of(fn, run_id)["status"] == "generated"


def test_a_failed_generation_is_proceeded_to_the_end(fn, api, workflow, script) -> None:
    script.faults = {"batch": [GenerationError("the LLM refused the key")]}
    run_id = UUID(post(fn["runs"], "/generate").body["training_run_id"])

    assert workflow.wait(run_id, Phase.GENERATING, 1).state is ExecutionState.FAILED
    run = run_of(fn, run_id)
    assert run["status"] == "generating_failed"
    assert "refused the key" in run["error_message"]
    settings = call(fn["settings"], api_event("GET", f"{P}/settings")).body
    assert (settings["blocking_run_id"], settings["blocking_run_status"]) == (
        str(run_id),
        "generating_failed",
    )
    assert post(fn["runs"], "/generate").status == 409

    assert post(fn["proceed"], "/proceed", {"training_run_id": str(run_id)}).status == 202
    assert workflow.wait(run_id, Phase.GENERATING, 2).state is ExecutionState.SUCCEEDED
    run = run_of(fn, run_id)
    assert (run["status"], run["attempt"], run["error_message"]) == ("generated", 2, None)
