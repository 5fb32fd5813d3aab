"""The real ASL executed by moto's interpreter (LocalWorkflow), with in-test task handlers.

The record-failure side is the real `functions/record_failure` logic over an in-memory store,
so every failure path is followed to the run's final status. The real generation and training
handlers are wired in by the composition root; here the task handlers are small scripts that
keep to the contract in docs/architecture.md.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import moto
import pytest
from deepmem.domain.errors import (
    GenerationError,
    StoreError,
    TrainingError,
    TransientGenerationError,
    TransientTrainingError,
)
from deepmem.domain.models import TrainingRun
from deepmem.domain.status import Phase, RunStatus, failed_status
from deepmem.local.moto_interpreter import VERIFIED_MOTO_VERSION
from deepmem.local.workflow import (
    DEFINITION_PATH,
    LocalLambdaContext,
    LocalWorkflow,
)
from deepmem.ports import ExecutionState

from tests.fakes.memory_store import MemoryRunStore

ROOT = Path(__file__).resolve().parents[2]


def load_function(name: str) -> ModuleType:
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"deepmem_function_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


record_failure_app = load_function("record_failure")


@dataclass
class Script:
    """What the in-test task handlers do, and what they saw."""

    store: MemoryRunStore
    lanes: list[tuple[int, int]] = field(default_factory=lambda: [(0, 6), (6, 10)])
    batch_size: int = 2
    max_concurrency: int = 2
    batch_delay: float = 0.0
    check_states: list[str] = field(default_factory=lambda: ["pending", "training", "completed"])
    faults: dict[str, list[BaseException]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    record_calls: list[dict[str, Any]] = field(default_factory=list)
    record_results: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    gate: threading.Event | None = None
    entered: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _enter(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.calls.append(event)
            pending = self.faults.get(event["action"])
            fault = pending.pop(0) if pending else None
        if fault is not None:
            raise fault

    def generate(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        assert context.get_remaining_time_in_millis() > 0 and context.aws_request_id
        self._enter(event)
        run_id, attempt = event["run_id"], event["attempt"]
        action = event["action"]
        if action == "plan":
            self.entered.set()
            if self.gate is not None:
                self.gate.wait(10)
            lanes = [
                {"lane": i, "start": a, "stop": b, "cursor": a}
                for i, (a, b) in enumerate(self.lanes)
            ]
            total = sum(b - a for a, b in self.lanes)
            return {
                "run_id": run_id,
                "attempt": attempt,
                "total_chunks": total,
                "lanes": lanes,
                "max_concurrency": self.max_concurrency,
                "setup": {"dataset": "ds", "settings": {"batch_size": self.batch_size}},
            }
        if action == "batch":
            with self.lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            time.sleep(self.batch_delay)
            with self.lock:
                self.in_flight -= 1
            lane = dict(event["lane"])
            lane["cursor"] = min(lane["stop"], lane["cursor"] + self.batch_size)
            return {
                "run_id": run_id,
                "attempt": attempt,
                "lane": lane,
                "done": lane["cursor"] >= lane["stop"],
                "new_chunks": self.batch_size,
                "new_pairs": 2 * self.batch_size,
                "setup": event["setup"],
            }
        assert action == "finish"
        moved = self.store.transition(_uuid(run_id), RunStatus.GENERATING, RunStatus.GENERATED)
        assert moved is not None
        return {"run_id": run_id, "status": "generated"}

    def train(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self._enter(event)
        run_id, attempt = event["run_id"], event["attempt"]
        if event["action"] == "submit":
            state, job_id, poll = "pending", "job-1", 0
        else:
            assert event["action"] == "check"
            job_id, poll = event["job_id"], event["poll"] + 1
            state = self.check_states.pop(0)
            if state == "completed":
                self.store.transition(_uuid(run_id), RunStatus.TRAINING, RunStatus.COMPLETED)
        return {
            "run_id": run_id,
            "attempt": attempt,
            "job_id": job_id,
            "state": state,
            "wait_seconds": 30,
            "poll": poll,
        }

    def record(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        with self.lock:
            self.record_calls.append(event)
        result = record_failure_app.handle(event, self.store, None)
        with self.lock:
            self.record_results.append(result)
        return result

    def actions(self) -> list[str]:
        return [call["action"] for call in self.calls]


def _uuid(value: str) -> Any:
    from uuid import UUID

    return UUID(value)


@pytest.fixture
def script() -> Script:
    return Script(store=MemoryRunStore())


@pytest.fixture
def workflow(script: Script) -> Iterator[LocalWorkflow]:
    with LocalWorkflow(
        {
            "GenerateBatchFunction": script.generate,
            "TrainFunction": script.train,
            "RecordFailureFunction": script.record,
        }
    ) as wf:
        yield wf


def generating_run(script: Script) -> TrainingRun:
    return script.store.create_run("local/dataset", None)


def training_run(script: Script) -> TrainingRun:
    run = generating_run(script)
    script.store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATED)
    moved = script.store.transition(run.id, RunStatus.GENERATED, RunStatus.TRAINING)
    assert moved is not None
    return moved


def run_phase(workflow: LocalWorkflow, run: TrainingRun, phase: Phase) -> Any:
    workflow.start(run.id, phase, run.attempt)
    return workflow.wait(run.id, phase, run.attempt, timeout=30)


def task_failures(workflow: LocalWorkflow, run: TrainingRun, phase: Phase) -> list[str]:
    history = workflow.history(run.id, phase, run.attempt)
    return [e["taskFailedEventDetails"]["error"] for e in history if e["type"] == "TaskFailed"]


# ---------------------------------------------------------------- the moto pin


def test_moto_is_the_version_the_local_adapter_was_verified_against() -> None:
    from importlib.metadata import version

    assert moto.__version__ == VERIFIED_MOTO_VERSION
    assert version("moto") == VERIFIED_MOTO_VERSION


# ---------------------------------------------------------------- happy paths


def test_generation_plans_walks_every_lane_in_batches_and_finishes(
    workflow: LocalWorkflow, script: Script
) -> None:
    run = generating_run(script)
    execution = run_phase(workflow, run, Phase.GENERATING)

    assert execution.state is ExecutionState.SUCCEEDED
    assert execution.name == f"{run.id}-generating-1"
    batches = [c for c in script.calls if c["action"] == "batch"]
    # lane 0 covers 6 chunks, lane 1 covers 4, two per batch: 3 + 2 calls
    by_lane: dict[int, list[int]] = {}
    for call in batches:
        assert call["run_id"] == str(run.id) and call["attempt"] == 1
        # The plan's setup, through the Map to each lane and from each call to the next.
        assert call["setup"] == {"dataset": "ds", "settings": {"batch_size": 2}}
        by_lane.setdefault(call["lane"]["lane"], []).append(call["lane"]["cursor"])
    assert {k: sorted(v) for k, v in by_lane.items()} == {0: [0, 2, 4], 1: [6, 8]}
    assert script.actions()[0] == "plan" and script.actions()[-1] == "finish"
    execution_input = {"run_id": str(run.id), "phase": "generating", "attempt": 1}
    assert script.calls[0] == {
        "action": "plan",
        "run_id": str(run.id),
        "attempt": 1,
        "execution": execution_input,
    }
    finish = script.calls[-1]
    assert {k: finish[k] for k in ("action", "run_id", "attempt", "execution")} == {
        "action": "finish",
        "run_id": str(run.id),
        "attempt": 1,
        "execution": execution_input,
    }
    # What each lane ended with, and no more (not the setup): all done, no handover.
    assert sorted(end["lane"]["lane"] for end in finish["lanes"]) == [0, 1]
    assert all(set(end) == {"lane", "done"} and end["done"] for end in finish["lanes"])
    assert script.store.get_run(run.id).status is RunStatus.GENERATED
    assert script.record_calls == []


def test_map_concurrency_comes_from_the_plan(workflow: LocalWorkflow, script: Script) -> None:
    script.lanes = [(0, 4), (4, 8), (8, 12)]
    script.batch_delay = 0.05
    script.max_concurrency = 1
    run = generating_run(script)

    assert run_phase(workflow, run, Phase.GENERATING).state is ExecutionState.SUCCEEDED
    assert script.max_in_flight == 1


def test_lanes_run_in_parallel_up_to_the_plans_cap(workflow: LocalWorkflow, script: Script) -> None:
    script.lanes = [(0, 4), (4, 8), (8, 12)]
    script.batch_delay = 0.1
    script.max_concurrency = 3
    run = generating_run(script)

    assert run_phase(workflow, run, Phase.GENERATING).state is ExecutionState.SUCCEEDED
    assert script.max_in_flight >= 2


def test_training_submits_then_checks_until_completed(
    workflow: LocalWorkflow, script: Script
) -> None:
    run = training_run(script)
    execution = run_phase(workflow, run, Phase.TRAINING)

    assert execution.state is ExecutionState.SUCCEEDED
    assert script.actions() == ["submit", "check", "check", "check"]
    assert script.calls[1] == {
        "action": "check",
        "run_id": str(run.id),
        "attempt": run.attempt,
        "job_id": "job-1",
        "poll": 0,
    }
    assert [call["poll"] for call in script.calls[1:]] == [0, 1, 2]
    waits = [
        e
        for e in workflow.history(run.id, Phase.TRAINING, run.attempt)
        if e["type"] == "WaitStateEntered"
    ]
    assert len(waits) == 3
    assert script.store.get_run(run.id).status is RunStatus.COMPLETED
    assert script.record_calls == []


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("action", "phase", "error"),
    [
        ("plan", Phase.GENERATING, GenerationError("the dataset has no text tensor")),
        ("batch", Phase.GENERATING, GenerationError("401 invalid api key")),
        ("finish", Phase.GENERATING, GenerationError("2 chunks never processed")),
        ("submit", Phase.TRAINING, TrainingError("not enough pairs")),
        ("check", Phase.TRAINING, TrainingError("job job-1 failed: OOM")),
    ],
)
def test_a_fault_in_any_task_fails_the_run_in_its_phase_with_the_error_kept(
    workflow: LocalWorkflow, script: Script, action: str, phase: Phase, error: Exception
) -> None:
    script.faults[action] = [error]
    run = generating_run(script) if phase is Phase.GENERATING else training_run(script)

    execution = run_phase(workflow, run, phase)

    name = type(error).__name__
    assert execution.state is ExecutionState.FAILED
    # the Fail state re-raises the caught error, so the console shows the cause, not "failed"
    assert execution.error == name
    assert json.loads(execution.cause or "{}")["errorMessage"] == str(error)
    catch, safety_net = script.record_calls
    assert catch["source"] == "catch"
    assert catch["phase"] == phase.value
    assert catch["run_id"] == str(run.id) and catch["attempt"] == run.attempt
    assert catch["error"]["Error"] == name
    assert script.record_results[0]["recorded"] is True
    # the status-change event still arrives, and changes nothing
    assert safety_net["source"] == "aws.states" and safety_net["detail"]["status"] == "FAILED"
    assert script.record_results[1] == script.record_results[1] | {
        "recorded": False,
        "skipped": "not_active",
    }
    failed = script.store.get_run(run.id)
    assert failed.status is failed_status(phase)
    assert failed.error_message == f"{name}: {error}"
    # nothing ran after the failing task
    assert script.actions()[-1] == action
    assert "finish" not in script.actions() or action == "finish"


def test_a_transient_fault_is_retried_and_leaves_no_trace_but_the_retry(
    workflow: LocalWorkflow, script: Script
) -> None:
    script.faults["batch"] = [TransientGenerationError("429 rate limited"), StoreError("reset")]
    run = generating_run(script)

    execution = run_phase(workflow, run, Phase.GENERATING)

    assert execution.state is ExecutionState.SUCCEEDED
    assert script.store.get_run(run.id).status is RunStatus.GENERATED
    assert script.store.get_run(run.id).error_message is None
    assert script.record_calls == []
    assert sorted(task_failures(workflow, run, Phase.GENERATING)) == [
        "StoreError",
        "TransientGenerationError",
    ]


def test_a_transient_training_fault_is_retried(workflow: LocalWorkflow, script: Script) -> None:
    script.faults["check"] = [TransientTrainingError("503 from the trainer")]
    run = training_run(script)

    execution = run_phase(workflow, run, Phase.TRAINING)

    assert execution.state is ExecutionState.SUCCEEDED
    assert script.store.get_run(run.id).status is RunStatus.COMPLETED
    assert task_failures(workflow, run, Phase.TRAINING) == ["TransientTrainingError"]


def test_a_transient_fault_that_never_clears_ends_caught_after_the_retries(
    workflow: LocalWorkflow, script: Script
) -> None:
    script.faults["plan"] = [TransientGenerationError("503")] * 10
    run = generating_run(script)

    execution = run_phase(workflow, run, Phase.GENERATING)

    assert execution.state is ExecutionState.FAILED
    assert execution.error == "TransientGenerationError"
    # the first try and MaxAttempts (5) retries
    assert script.actions() == ["plan"] * 6
    assert script.store.get_run(run.id).status is RunStatus.GENERATING_FAILED


# ---------------------------------------------------------------- abort, duplicates


def test_aborting_a_running_execution_fails_the_run_through_the_safety_net(
    workflow: LocalWorkflow, script: Script
) -> None:
    script.gate = threading.Event()
    run = generating_run(script)
    workflow.start(run.id, Phase.GENERATING, run.attempt)
    assert script.entered.wait(10)

    workflow.stop(run.id, Phase.GENERATING, run.attempt, cause="cancelled by an admin")
    script.gate.set()
    execution = workflow.wait(run.id, Phase.GENERATING, run.attempt, timeout=30)

    assert execution.state is ExecutionState.ABORTED
    assert script.actions() == ["plan"]  # nothing ran after the stop
    (event,) = script.record_calls
    assert event["source"] == "aws.states"
    assert event["detail"]["status"] == "ABORTED"
    assert event["detail"]["stateMachineArn"] == workflow.state_machine_arn
    failed = script.store.get_run(run.id)
    assert failed.status is RunStatus.GENERATING_FAILED
    assert failed.error_message == "cancelled"


def test_starting_the_same_run_phase_and_attempt_twice_makes_one_execution(
    workflow: LocalWorkflow, script: Script
) -> None:
    script.gate = threading.Event()
    run = generating_run(script)

    first = workflow.start(run.id, Phase.GENERATING, run.attempt)
    second = workflow.start(run.id, Phase.GENERATING, run.attempt)
    script.gate.set()
    workflow.wait(run.id, Phase.GENERATING, run.attempt)
    third = workflow.start(run.id, Phase.GENERATING, run.attempt)  # after it ended

    assert first.arn == second.arn == third.arn
    assert third.state is ExecutionState.SUCCEEDED
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    executions = sfn.list_executions(stateMachineArn=workflow.state_machine_arn)["executions"]
    assert [e["name"] for e in executions] == [f"{run.id}-generating-1"]
    assert script.actions().count("plan") == 1


def test_describe_is_none_for_an_execution_never_started(
    workflow: LocalWorkflow, script: Script
) -> None:
    run = generating_run(script)
    assert workflow.describe(run.id, Phase.GENERATING, run.attempt) is None


def test_a_failure_of_an_older_attempt_never_fails_the_current_one(
    workflow: LocalWorkflow, script: Script
) -> None:
    run = generating_run(script)
    script.store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED)
    current = script.store.transition(
        run.id, RunStatus.GENERATING_FAILED, RunStatus.GENERATING, next_attempt=True
    )
    assert current is not None and current.attempt == 2
    script.faults["plan"] = [GenerationError("old attempt")]

    execution = run_phase(workflow, run, Phase.GENERATING)  # attempt 1, stale

    assert execution.state is ExecutionState.FAILED
    assert all(result["skipped"] == "stale_attempt" for result in script.record_results)
    assert script.store.get_run(run.id).status is RunStatus.GENERATING


# ---------------------------------------------------------------- the adapter itself


def test_waits_and_retry_intervals_are_scaled(tmp_path: Path, script: Script) -> None:
    # 30 s of Wait and 5 s + jittered retry become a few hundredths of a second at this scale
    script.faults["submit"] = [TransientTrainingError("503")]
    script.check_states = ["completed"]
    started = time.monotonic()
    with LocalWorkflow(
        {
            "GenerateBatchFunction": script.generate,
            "TrainFunction": script.train,
            "RecordFailureFunction": script.record,
        },
        time_scale=0.002,
    ) as wf:
        run = training_run(script)
        assert run_phase(wf, run, Phase.TRAINING).state is ExecutionState.SUCCEEDED
    assert time.monotonic() - started < 10


def test_every_placeholder_needs_a_handler(script: Script) -> None:
    from deepmem.domain.errors import WorkflowError

    with pytest.raises(WorkflowError, match="TrainFunctionArn"):
        LocalWorkflow(
            {"GenerateBatchFunction": script.generate, "RecordFailureFunction": script.record}
        )


def test_the_context_counts_down() -> None:
    context = LocalLambdaContext(function_name="f", timeout_seconds=2)
    first = context.get_remaining_time_in_millis()
    time.sleep(0.02)
    assert 0 < context.get_remaining_time_in_millis() < first <= 2000


def test_one_local_workflow_at_a_time(workflow: LocalWorkflow, script: Script) -> None:
    from deepmem.domain.errors import WorkflowError

    with pytest.raises(WorkflowError, match="another LocalWorkflow"):
        LocalWorkflow({"RecordFailureFunction": script.record})


def test_closing_stops_what_still_runs_and_the_run_is_left_failed(script: Script) -> None:
    script.gate = threading.Event()
    wf = LocalWorkflow(
        {
            "GenerateBatchFunction": script.generate,
            "TrainFunction": script.train,
            "RecordFailureFunction": script.record,
        }
    )
    run = generating_run(script)
    wf.start(run.id, Phase.GENERATING, run.attempt)
    assert script.entered.wait(10)
    threading.Timer(0.2, script.gate.set).start()

    wf.close()

    assert script.actions() == ["plan"]
    failed = script.store.get_run(run.id)
    assert failed.status is RunStatus.GENERATING_FAILED
    assert failed.error_message == "cancelled"
    # the mock and the patches are gone with it: another one can open
    LocalWorkflow(
        {
            "GenerateBatchFunction": script.generate,
            "TrainFunction": script.train,
            "RecordFailureFunction": script.record,
        }
    ).close()


def test_an_execution_that_times_out_is_failed_by_the_safety_net(
    tmp_path: Path, script: Script
) -> None:
    definition = json.loads(DEFINITION_PATH.read_text())
    definition["TimeoutSeconds"] = 1
    path = tmp_path / "training.asl.json"
    path.write_text(json.dumps(definition))
    script.gate = threading.Event()
    with LocalWorkflow(
        {
            "GenerateBatchFunction": script.generate,
            "TrainFunction": script.train,
            "RecordFailureFunction": script.record,
        },
        definition_path=path,
    ) as wf:
        run = generating_run(script)
        wf.start(run.id, Phase.GENERATING, run.attempt)
        execution = wf.wait(run.id, Phase.GENERATING, run.attempt, timeout=20)
        script.gate.set()

    assert execution.state is ExecutionState.TIMED_OUT
    failed = script.store.get_run(run.id)
    assert failed.status is RunStatus.GENERATING_FAILED
    assert failed.error_message == "timed out"


def test_a_result_that_is_not_json_fails_like_lambda_does(
    workflow: LocalWorkflow, script: Script
) -> None:
    run = training_run(script)
    original = script.train

    def train(event: dict[str, Any], context: Any) -> Any:
        result = original(event, context)
        return {**result, "job": object()} if event["action"] == "submit" else result

    script.train = train  # type: ignore[method-assign]
    # the workflow holds the bound method it was given: swap through the handler table
    workflow._handlers["TrainFunction"] = train

    execution = run_phase(workflow, run, Phase.TRAINING)

    assert execution.state is ExecutionState.FAILED
    assert execution.error == "Runtime.MarshalError"
    assert script.store.get_run(run.id).status is RunStatus.TRAINING_FAILED


def test_the_deployed_task_handlers_can_be_loaded_for_the_local_workflow() -> None:
    from deepmem.local.workflow import TASK_FUNCTIONS, function_handlers

    handlers = function_handlers()

    assert set(handlers) == set(TASK_FUNCTIONS)
    assert all(callable(handler) for handler in handlers.values())
    assert function_handlers() == handlers  # loaded once
