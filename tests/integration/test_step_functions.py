"""StepFunctionsWorkflow against moto's Step Functions API (executions are not run here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from deepmem.adapters.workflow.step_functions import StepFunctionsWorkflow
from deepmem.domain.errors import ExecutionAlreadyExistsError, WorkflowError
from deepmem.domain.status import Phase
from deepmem.ports import ExecutionState
from moto import mock_aws

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


@pytest.fixture
def sfn() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("stepfunctions", region_name=REGION)


@pytest.fixture
def machine_arn(sfn: Any) -> str:
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    definition = {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}
    arn: str = sfn.create_state_machine(
        name="deepmem-training", definition=json.dumps(definition), roleArn=role
    )["stateMachineArn"]
    return arn


@pytest.fixture
def workflow(sfn: Any, machine_arn: str) -> StepFunctionsWorkflow:
    return StepFunctionsWorkflow(sfn, machine_arn)


def test_start_names_the_execution_after_run_phase_and_attempt(
    workflow: StepFunctionsWorkflow, sfn: Any
) -> None:
    run_id = uuid4()

    execution = workflow.start(run_id, Phase.GENERATING, 3)

    assert execution.name == f"{run_id}-generating-3"
    assert execution.state is ExecutionState.RUNNING
    described = sfn.describe_execution(executionArn=execution.arn)
    assert json.loads(described["input"]) == {
        "run_id": str(run_id),
        "phase": "generating",
        "attempt": 3,
    }


def test_a_second_start_returns_the_same_execution(
    workflow: StepFunctionsWorkflow, sfn: Any, machine_arn: str
) -> None:
    run_id = uuid4()
    first = workflow.start(run_id, Phase.TRAINING, 1)
    second = workflow.start(run_id, Phase.TRAINING, 1)

    assert second.arn == first.arn
    listed = sfn.list_executions(stateMachineArn=machine_arn)["executions"]
    assert len(listed) == 1


def test_a_start_after_the_execution_ended_returns_the_ended_one(
    workflow: StepFunctionsWorkflow,
) -> None:
    run_id = uuid4()
    workflow.start(run_id, Phase.TRAINING, 1)
    workflow.stop(run_id, Phase.TRAINING, 1, "cancelled by an admin")

    again = workflow.start(run_id, Phase.TRAINING, 1)  # Step Functions: ExecutionAlreadyExists

    assert again.state is ExecutionState.ABORTED


def test_another_attempt_is_another_execution(workflow: StepFunctionsWorkflow) -> None:
    run_id = uuid4()
    assert (
        workflow.start(run_id, Phase.GENERATING, 1).arn
        != workflow.start(run_id, Phase.GENERATING, 2).arn
    )


def test_stop_aborts_and_describe_reports_it(workflow: StepFunctionsWorkflow) -> None:
    run_id = uuid4()
    workflow.start(run_id, Phase.GENERATING, 1)

    workflow.stop(run_id, Phase.GENERATING, 1, "cancelled")

    described = workflow.describe(run_id, Phase.GENERATING, 1)
    assert described is not None and described.state is ExecutionState.ABORTED


def test_describe_is_none_for_an_unknown_execution(workflow: StepFunctionsWorkflow) -> None:
    assert workflow.describe(uuid4(), Phase.GENERATING, 1) is None


def test_sdk_errors_become_workflow_errors(sfn: Any, machine_arn: str) -> None:
    missing = StepFunctionsWorkflow(sfn, machine_arn.replace("deepmem-training", "missing"))
    with pytest.raises(WorkflowError):
        missing.start(uuid4(), Phase.GENERATING, 1)
    with pytest.raises(WorkflowError):
        missing.stop(uuid4(), Phase.GENERATING, 1, "x")


class _Unreachable:
    """A client whose every call fails like a network outage or a refusal."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        def call(**_: Any) -> Any:
            raise self.error

        return call


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="https://states.us-east-1.amazonaws.com"),
        ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "X"),
    ],
)
def test_every_call_wraps_the_sdk_error(error: Exception) -> None:
    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:deepmem-training"
    workflow = StepFunctionsWorkflow(_Unreachable(error), arn)  # type: ignore[arg-type]
    run_id = uuid4()
    with pytest.raises(WorkflowError) as started:
        workflow.start(run_id, Phase.GENERATING, 1)
    assert started.value.__cause__ is error
    with pytest.raises(WorkflowError):
        workflow.stop(run_id, Phase.GENERATING, 1, "x")
    with pytest.raises(WorkflowError):
        workflow.describe(run_id, Phase.GENERATING, 1)


def test_already_exists_without_a_describable_execution_is_reported() -> None:
    class _Racing:
        def start_execution(self, **_: Any) -> Any:
            raise ClientError({"Error": {"Code": "ExecutionAlreadyExists"}}, "StartExecution")

        def describe_execution(self, **_: Any) -> Any:
            raise ClientError({"Error": {"Code": "ExecutionDoesNotExist"}}, "DescribeExecution")

    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:deepmem-training"
    workflow = StepFunctionsWorkflow(_Racing(), arn)  # type: ignore[arg-type]
    with pytest.raises(ExecutionAlreadyExistsError):
        workflow.start(uuid4(), Phase.TRAINING, 1)


def test_a_state_machine_arn_is_required(sfn: Any) -> None:
    with pytest.raises(ValueError, match="ARN"):
        StepFunctionsWorkflow(sfn, "")
