"""`events/` holds what `sam local invoke -e` sends: each sample is valid for Powertools' model
of its source (API Gateway HTTP API payload 2.0, its Lambda authorizer request, EventBridge),
for the handler's own input model, and has the shape the ASL's task `Payload` gives it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayProxyEventV2Model,
    EventBridgeModel,
)
from aws_lambda_powertools.utilities.parser.models.apigwv2 import ApiGatewayAuthorizerRequestV2
from deepmem.services.failures import ExecutionStatusChange, FailureCaught

from tests.api_support import load_function
from tests.deployed_support import ROOT, function_folders, target_of, template

SAMPLES = {path.stem: path for path in sorted((ROOT / "events").glob("*.json"))}
API = {"RunsFunction", "ProceedFunction", "DeleteFunction", "SettingsFunction"}


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(SAMPLES[name].read_text(encoding="utf-8"))
    return event


def routes(logical_id: str) -> set[str]:
    """`METHOD path` of every HttpApi event of the function in template.yaml."""
    events = template()["Resources"][logical_id]["Properties"].get("Events", {})
    return {
        f"{e['Properties']['Method']} {e['Properties']['Path']}"
        for e in events.values()
        if e["Type"] == "HttpApi"
    }


def asl_payloads() -> dict[tuple[str, str], set[str]]:
    """(function, action or source) → the keys of the Payload the ASL sends that task."""
    definition = json.loads((ROOT / "statemachine" / "training.asl.json").read_text())
    found: dict[tuple[str, str], set[str]] = {}

    def walk(states: dict[str, Any]) -> None:
        for state in states.values():
            if state["Type"] == "Task" and state["Resource"].endswith(":lambda:invoke"):
                # (StartNextExecution is a Task too, of Step Functions itself: no function.)
                parameters = state["Parameters"]
                function = parameters["FunctionName"].removeprefix("${").removesuffix("Arn}")
                payload = parameters["Payload"]
                kind = payload.get("action") or payload.get("source")
                found[(function, kind)] = {key.removesuffix(".$") for key in payload}
            for nested in ("ItemProcessor", "Iterator"):
                if nested in state:
                    walk(state[nested]["States"])

    walk(definition["States"])
    return found


def test_every_function_has_a_sample() -> None:
    functions = {
        logical_id
        for logical_id, resource in template()["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    assert {target_of(name) for name in SAMPLES} == functions


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_a_sample_is_valid_for_its_source_and_its_handler(name: str) -> None:
    function, event = target_of(name), sample(name)
    if function in API:
        request = APIGatewayProxyEventV2Model.model_validate(event)
        assert request.routeKey in routes(function)
        assert request.requestContext.authorizer is not None  # it passed the authorizer
    elif function == "DashboardFunction":
        request = APIGatewayProxyEventV2Model.model_validate(event)
        assert request.routeKey in routes(function)
        assert request.requestContext.authorizer is None  # the page needs no token
    elif function == "AuthorizerFunction":
        ApiGatewayAuthorizerRequestV2.model_validate(event)
    elif event.get("source") == "aws.states":
        EventBridgeModel.model_validate(event)
        ExecutionStatusChange.model_validate(event)
    elif function == "RecordFailureFunction":
        FailureCaught.model_validate(event)
    elif function == "GenerateBatchFunction":
        load_function("generate_batch")._TASK.validate_python(event)
    else:
        load_function("train").TrainTask.model_validate(event)


def test_every_task_sample_has_the_shape_the_state_machine_sends() -> None:
    payloads = asl_payloads()
    shapes = {}
    for name in SAMPLES:
        event = sample(name)
        kind = event.get("action") or (event["source"] if event.get("source") == "catch" else None)
        if kind is not None:
            shapes[(target_of(name), kind)] = set(event)

    # Every task the ASL calls has a sample, with exactly the keys the ASL's Payload gives.
    assert {key: shapes.get(key) for key in payloads} == payloads


def test_the_readme_gives_a_sam_local_invoke_command_for_every_sample() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    folders = {logical_id: folder for folder, logical_id in function_folders().items()}
    missing = []
    for name in SAMPLES:
        function = target_of(name)
        rows = [line for line in readme if line.startswith(f"| {folders[function]} |")]
        if not any(f"`{function} -e " in r and f"events/{name}.json" in r for r in rows):
            missing.append(name)

    assert missing == []
