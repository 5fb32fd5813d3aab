"""The built functions driven by the real state machine: the ASL created in the moto server
with the template's DefinitionSubstitutions, its Lambda tasks dispatched to the warm built
functions, started by the built API functions as API Gateway would call them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api_support import SigningKeys
from tests.artifact.calls import api, clear_unfinished_runs, request, run, start_generation
from tests.artifact.stack import (
    OPENAI_KEY,
    SERVICE_KEY,
    LoopbackStack,
    loopback_stack,
    parsed,
)
from tests.db import TestServer

#: What the state machine and the API calls reach; the others have their own tests.
FUNCTIONS = (
    "RunsFunction",
    "ProceedFunction",
    "DeleteFunction",
    "GenerateBatchFunction",
    "TrainFunction",
    "RecordFailureFunction",
)
ENDED = ("generated", "completed", "generating_failed", "training_failed")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, sdk: Path, pg_server: TestServer, keys: SigningKeys
) -> Iterator[LoopbackStack]:
    with loopback_stack(
        tmp_path_factory.mktemp("stack"), sdk, pg_server, keys, execute=True, only=FUNCTIONS
    ) as built:
        yield built


@pytest.fixture(autouse=True)
def _fresh(stack: LoopbackStack) -> Iterator[None]:
    stack.llm.configure(fail_first=0, retry_after=None)
    stack.task_errors.clear()
    clear_unfinished_runs(stack)
    yield
    stack.llm.configure(fail_first=0, retry_after=None)


def wait_for(stack: LoopbackStack, run_id: str, timeout: float = 240.0) -> dict[str, Any]:
    """The run once its execution moved it out of `generating`/`training`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = run(stack, run_id)
        if current["status"] in ENDED:
            return current
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still {current['status']} after {timeout} s")


def execution(stack: LoopbackStack, run_id: str, phase: str, attempt: int) -> dict[str, Any]:
    arn = stack.state_machine_arn.replace(":stateMachine:", ":execution:")
    sfn = stack.aws("stepfunctions")
    deadline = time.monotonic() + 60
    while True:
        described: dict[str, Any] = sfn.describe_execution(
            executionArn=f"{arn}:{run_id}-{phase}-{attempt}"
        )
        if described["status"] != "RUNNING" or time.monotonic() > deadline:
            return described
        time.sleep(0.2)


def train(stack: LoopbackStack, run_id: str) -> None:
    answer = api(stack, "RunsFunction", request("POST", "/train", {"training_run_id": run_id}))
    assert answer.status == 202, answer


def test_a_run_goes_from_generate_to_completed_through_the_state_machine(
    stack: LoopbackStack,
) -> None:
    run_id = start_generation(stack)
    generated = wait_for(stack, run_id)
    generation = execution(stack, run_id, "generating", 1)
    train(stack, run_id)
    completed = wait_for(stack, run_id)
    training = execution(stack, run_id, "training", 1)

    assert generated["status"] == "generated", generated
    assert generated["processed_chunks"] == generated["total_chunks"] == 24
    assert generation["status"] == "SUCCEEDED"
    assert completed["status"] == "completed", completed
    assert completed["metrics"], completed
    assert training["status"] == "SUCCEEDED"


def test_a_failed_generation_is_recorded_and_proceeds_to_completed(stack: LoopbackStack) -> None:
    # 401 is permanent: no retry helps, the Catch records the failure.
    stack.llm.configure(fail_first=10_000, fail_status=401)
    run_id = start_generation(stack)
    failed = wait_for(stack, run_id)
    first = execution(stack, run_id, "generating", 1)
    stack.llm.configure(fail_first=0)
    proceed = api(
        stack, "ProceedFunction", request("POST", "/proceed", {"training_run_id": run_id})
    )
    generated = wait_for(stack, run_id)
    train(stack, run_id)
    completed = wait_for(stack, run_id)

    assert failed["status"] == "generating_failed", failed
    assert "GenerationError" in (failed["error_message"] or ""), failed
    assert first["status"] == "FAILED"
    assert proceed.status == 202, proceed
    assert generated["status"] == "generated" and generated["attempt"] == 2, generated
    assert completed["status"] == "completed", completed


def test_a_rate_limited_embeddings_endpoint_is_retried_by_the_state_machine(
    stack: LoopbackStack,
) -> None:
    run_id = start_generation(stack)
    assert wait_for(stack, run_id)["status"] == "generated"
    # More 429s than the client's own retries (DEEPMEM_LLM_MAX_RETRIES, 6 by default: 7 calls)
    # spend: the first submit fails transiently, the state machine's retry gets through.
    stack.llm.reset()
    stack.llm.configure(fail_first=9, fail_status=429, retry_after="0.01")
    train(stack, run_id)
    completed = wait_for(stack, run_id)

    assert completed["status"] == "completed", completed
    assert ("TrainFunction", "TransientEmbeddingError") in stack.task_errors
    assert stack.llm.stats()["by_status"]["429"] == 9
    assert execution(stack, run_id, "training", 1)["status"] == "SUCCEEDED"


def test_no_key_shows_in_any_log_line_of_the_runs(stack: LoopbackStack) -> None:
    # Every line the built functions logged in this module's runs (after the tests above).
    lines = [line for built in stack.functions.values() for line in built.logs()]
    records = parsed(lines)

    assert len(records) > 50, "the functions logged too little to tell"
    assert [line for line in lines if OPENAI_KEY in line or SERVICE_KEY in line] == []
