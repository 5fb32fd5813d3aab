"""The state machine definition, read as data: every path is wired, every task is covered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deepmem.local.workflow import DEFINITION_PATH, placeholders

ROOT = Path(__file__).resolve().parents[2]
LAMBDA_SERVICE_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}
TRANSIENT = {
    "generating": {"TransientGenerationError", "StoreError"},
    "training": {"TransientTrainingError", "TransientEmbeddingError", "StoreError"},
}
RECORD_STATE = {"generating": "RecordGenerationFailure", "training": "RecordTrainingFailure"}
PHASE_START = {"generating": "Plan", "training": "SubmitTraining"}
LAMBDA_TASK = "arn:aws:states:::lambda:invoke"
START_EXECUTION = "arn:aws:states:::states:startExecution"


@pytest.fixture(scope="module")
def asl() -> dict[str, Any]:
    assert DEFINITION_PATH == ROOT / "statemachine" / "training.asl.json"
    return json.loads(DEFINITION_PATH.read_text())


def machines(definition: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The top-level machine and every Map's item processor."""
    yield definition
    for state in definition["States"].values():
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            yield from machines(processor)


def targets(state: dict[str, Any]) -> list[str]:
    found = [state[k] for k in ("Next", "Default") if k in state]
    found += [choice["Next"] for choice in state.get("Choices", [])]
    found += [catcher["Next"] for catcher in state.get("Catch", [])]
    return found


def reachable(machine: dict[str, Any], start: str | None = None) -> set[str]:
    seen: set[str] = set()
    todo = [start or machine["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(targets(machine["States"][name]))
    return seen


def all_states(definition: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for machine in machines(definition):
        yield from machine["States"].items()


def test_every_next_default_and_catch_target_exists(asl: dict[str, Any]) -> None:
    for machine in machines(asl):
        assert machine["StartAt"] in machine["States"]
        for name, state in machine["States"].items():
            for target in targets(state):
                assert target in machine["States"], f"{name} -> {target}"


def test_no_state_is_unreachable(asl: dict[str, Any]) -> None:
    for machine in machines(asl):
        assert reachable(machine) == set(machine["States"])


def test_the_phase_choice_routes_to_each_phase(asl: dict[str, Any]) -> None:
    route = asl["States"][asl["StartAt"]]
    assert route["Type"] == "Choice"
    routes = {c["StringEquals"]: c["Next"] for c in route["Choices"] if c["Variable"] == "$.phase"}
    assert routes == PHASE_START
    assert asl["States"][route["Default"]]["Type"] == "Fail"


@pytest.mark.parametrize("phase", ["generating", "training"])
def test_every_task_and_map_of_a_phase_is_caught_into_its_record_failure(
    asl: dict[str, Any], phase: str
) -> None:
    other = RECORD_STATE["training" if phase == "generating" else "generating"]
    phase_states = (
        reachable(asl, PHASE_START[phase])
        - {RECORD_STATE[phase]}
        - reachable(asl, RECORD_STATE[phase])
    )
    assert other not in phase_states
    covered = 0
    for name in phase_states:
        state = asl["States"][name]
        if state["Type"] not in ("Task", "Map", "Parallel"):
            continue
        catchers = state.get("Catch", [])
        assert catchers, f"{name} has no Catch"
        assert catchers[-1]["ErrorEquals"] == ["States.ALL"], name
        assert catchers[-1]["Next"] == RECORD_STATE[phase], name
        assert catchers[-1]["ResultPath"] == "$.error", name
        covered += 1
    assert covered == {"generating": 4, "training": 2}[phase]


@pytest.mark.parametrize("phase", ["generating", "training"])
def test_record_failure_sends_the_phase_and_the_error_then_fails(
    asl: dict[str, Any], phase: str
) -> None:
    state = asl["States"][RECORD_STATE[phase]]
    payload = state["Parameters"]["Payload"]
    assert payload["source"] == "catch"
    assert payload["phase"] == phase
    assert payload["run_id.$"] == "$$.Execution.Input.run_id"
    assert payload["attempt.$"] == "$$.Execution.Input.attempt"
    assert payload["error.$"] == "$.error"
    assert state["ResultPath"] is None  # keep $.error for the Fail state
    fail = asl["States"][state["Next"]]
    assert fail["Type"] == "Fail"
    assert (fail["ErrorPath"], fail["CausePath"]) == ("$.error.Error", "$.error.Cause")


def test_every_task_retries_service_errors_with_backoff_and_jitter_before_any_catch(
    asl: dict[str, Any],
) -> None:
    tasks = [(name, s) for name, s in all_states(asl) if s["Type"] == "Task"]
    assert len(tasks) == 8
    for name, state in tasks:
        retriers = state["Retry"]
        retried = {error for r in retriers for error in r["ErrorEquals"]}
        if state["Resource"] == LAMBDA_TASK:
            assert retried >= LAMBDA_SERVICE_ERRORS, name
        else:
            assert retried >= {"StepFunctions.ServiceException"}, name
        assert "States.ALL" not in retried, name  # a permanent error goes straight to Catch
        for retrier in retriers:
            assert retrier["JitterStrategy"] == "FULL", name
            assert retrier["BackoffRate"] >= 1.5, name
            assert retrier["MaxDelaySeconds"] >= retrier["IntervalSeconds"], name
            assert 1 <= retrier["MaxAttempts"] <= 10, name


@pytest.mark.parametrize("phase", ["generating", "training"])
def test_transient_errors_of_a_phase_are_retried(asl: dict[str, Any], phase: str) -> None:
    names = reachable(asl, PHASE_START[phase]) - reachable(asl, RECORD_STATE[phase])
    tasks = [
        asl["States"][n]
        for n in names
        if asl["States"][n]["Type"] == "Task" and asl["States"][n]["Resource"] == LAMBDA_TASK
    ]
    if phase == "generating":
        lane_loop = asl["States"]["GenerateLanes"]["ItemProcessor"]["States"]
        tasks += [s for s in lane_loop.values() if s["Type"] == "Task"]
    assert len(tasks) == {"generating": 3, "training": 2}[phase]
    for state in tasks:
        retried = {error for r in state["Retry"] for error in r["ErrorEquals"]}
        assert retried >= TRANSIENT[phase]


def test_resources_only_through_placeholders(asl: dict[str, Any]) -> None:
    for name, state in all_states(asl):
        if state["Type"] != "Task":
            continue
        if state["Resource"] == START_EXECUTION:  # the handover: this state machine only
            assert state["Parameters"]["StateMachineArn.$"] == "$$.StateMachine.Id", name
            assert state["ResultPath"] is None, name
            continue
        assert state["Resource"] == LAMBDA_TASK, name
        function = state["Parameters"]["FunctionName"]
        assert function.startswith("${") and function.endswith("Arn}"), name
        assert state.get("OutputPath") == "$.Payload" or state.get("ResultPath", "") is None, name
    assert placeholders(DEFINITION_PATH.read_text()) == {
        "GenerateBatchFunctionArn",
        "TrainFunctionArn",
        "RecordFailureFunctionArn",
    }


def test_jsonpath_only(asl: dict[str, Any]) -> None:
    text = DEFINITION_PATH.read_text()
    assert "JSONata" not in text and "{%" not in text
    assert '"Assign"' not in text  # moto 5.2.5 has no variables


def test_lanes_run_as_a_map_with_the_plans_concurrency(asl: dict[str, Any]) -> None:
    lanes = asl["States"]["GenerateLanes"]
    assert lanes["Type"] == "Map"
    assert lanes["ItemsPath"] == "$.lanes"
    assert lanes["MaxConcurrencyPath"] == "$.max_concurrency"
    assert lanes["ItemSelector"]["lane.$"] == "$$.Map.Item.Value"
    # The plan's setup reaches every lane call, and each call hands it to the next.
    assert lanes["ItemSelector"]["setup.$"] == "$.setup"
    batch = lanes["ItemProcessor"]["States"]["GenerateBatch"]
    assert batch["Parameters"]["Payload"]["setup.$"] == "$.setup"
    assert batch["OutputPath"] == "$.Payload"
    # Finish needs where each lane stopped; each lane ends with its lane and done alone
    # (not the setup), so the Map's result stays small.
    assert lanes["ResultPath"] == "$.lane_ends"
    loop = lanes["ItemProcessor"]["States"]
    choice = loop["LaneDone"]
    assert choice["Choices"] == [
        {"Variable": "$.done", "BooleanEquals": True, "Next": "LaneFinished"},
        {"Variable": "$.handover", "BooleanEquals": True, "Next": "LaneFinished"},
    ]
    assert choice["Default"] == "GenerateBatch"
    assert loop["LaneFinished"]["Parameters"] == {"lane.$": "$.lane", "done.$": "$.done"}


def test_an_execution_over_its_budget_hands_over_to_the_next_of_its_attempt(
    asl: dict[str, Any],
) -> None:
    states = asl["States"]
    finish = states["FinishGeneration"]["Parameters"]["Payload"]
    assert finish["lanes.$"] == "$.lane_ends"
    assert finish["execution.$"] == states["Plan"]["Parameters"]["Payload"]["execution.$"]
    assert finish["execution.$"] == "$$.Execution.Input"
    assert states["FinishGeneration"]["Next"] == "HandOver"
    hand_over = states["HandOver"]
    assert hand_over["Choices"] == [
        {"Variable": "$.handover", "BooleanEquals": True, "Next": "StartNextExecution"}
    ]
    assert hand_over["Default"] == "Generated"
    start = states["StartNextExecution"]
    assert start["Resource"] == START_EXECUTION
    assert start["Parameters"]["Name.$"] == "$.next_execution.name"
    assert start["Parameters"]["Input.$"] == "$.next_execution.input"
    # A retried start finds its successor there: that is a handover done, not a failure.
    assert start["Catch"][0] == {
        "ErrorEquals": ["StepFunctions.ExecutionAlreadyExistsException"],
        "ResultPath": None,
        "Next": "HandedOver",
    }
    assert start["Next"] == "HandedOver"
    assert states["HandedOver"]["Type"] == "Succeed"


def test_training_waits_between_checks(asl: dict[str, Any]) -> None:
    states = asl["States"]
    assert states["SubmitTraining"]["Next"] == "WaitForTraining"
    assert states["WaitForTraining"] == {
        "Type": "Wait",
        "SecondsPath": "$.wait_seconds",
        "Next": "CheckTraining",
    }
    assert states["CheckTraining"]["Next"] == "TrainingDone"
    done = states["TrainingDone"]
    assert done["Choices"][0]["StringEquals"] == "completed"
    assert done["Default"] == "WaitForTraining"


def test_the_execution_has_a_timeout_for_the_safety_net(asl: dict[str, Any]) -> None:
    assert 3600 <= asl["TimeoutSeconds"] <= 7 * 86400
