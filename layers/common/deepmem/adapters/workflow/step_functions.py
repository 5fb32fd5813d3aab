"""The Workflow port on AWS Step Functions (boto3)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from uuid import UUID

from botocore.exceptions import BotoCoreError, ClientError

from deepmem.domain.errors import ExecutionAlreadyExistsError, WorkflowError
from deepmem.domain.executions import execution_name
from deepmem.domain.status import Phase
from deepmem.ports import Execution, ExecutionState

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient


class StepFunctionsWorkflow:
    """Start, stop and describe the executions of the deployed state machine.

    Executions are named `<run>-<phase>-<attempt>`, so Step Functions itself refuses a
    second execution of the same attempt: a duplicate start returns the existing one. A long
    generation continues in `<run>-<phase>-<attempt>-<n>` (started by the state machine itself,
    before its predecessor ends): `describe` and `stop` act on the latest of that chain.
    """

    def __init__(self, client: SFNClient | None = None, state_machine_arn: str = "") -> None:
        if not state_machine_arn:
            raise ValueError("a state machine ARN is required")
        if client is None:
            import boto3

            client = boto3.client("stepfunctions")
        self._client = client
        self._state_machine_arn = state_machine_arn

    @property
    def state_machine_arn(self) -> str:
        return self._state_machine_arn

    def start(self, run_id: UUID, phase: Phase, attempt: int) -> Execution:
        name = execution_name(run_id, phase, attempt)
        payload = json.dumps({"run_id": str(run_id), "phase": phase.value, "attempt": attempt})
        try:
            arn = self._client.start_execution(
                stateMachineArn=self._state_machine_arn, name=name, input=payload
            )["executionArn"]
        except ClientError as exc:
            if _code(exc) != "ExecutionAlreadyExists":
                raise WorkflowError(f"cannot start execution {name}: {_message(exc)}") from exc
            existing = self.describe_arn(self.execution_arn(name))
            if existing is None:
                raise ExecutionAlreadyExistsError(name) from exc
            return existing
        except BotoCoreError as exc:
            raise WorkflowError(f"cannot start execution {name}: {exc}") from exc
        return Execution(name=name, arn=arn, state=ExecutionState.RUNNING)

    def stop(self, run_id: UUID, phase: Phase, attempt: int, cause: str) -> None:
        latest = self.describe(run_id, phase, attempt)
        arn = latest.arn if latest else self.execution_arn(execution_name(run_id, phase, attempt))
        try:
            self._client.stop_execution(executionArn=arn, error="Cancelled", cause=cause[:32768])
        except (ClientError, BotoCoreError) as exc:
            raise WorkflowError(f"cannot stop execution {arn}: {_message(exc)}") from exc

    def describe(self, run_id: UUID, phase: Phase, attempt: int) -> Execution | None:
        """The latest execution of the attempt: only one that succeeded can have handed over,
        and it started its successor before it ended, so the chain has no gap."""
        latest = self.describe_arn(self.execution_arn(execution_name(run_id, phase, attempt)))
        segment = 0
        while latest is not None and latest.state is ExecutionState.SUCCEEDED:
            segment += 1
            name = execution_name(run_id, phase, attempt, segment)
            following = self.describe_arn(self.execution_arn(name))
            if following is None:
                break
            latest = following
        return latest

    def execution_arn(self, name: str) -> str:
        """Executions of a standard state machine have ARNs derived from its own."""
        prefix = self._state_machine_arn.replace(":stateMachine:", ":execution:", 1)
        return f"{prefix}:{name}"

    def describe_arn(self, arn: str) -> Execution | None:
        try:
            out: Any = self._client.describe_execution(executionArn=arn)
        except ClientError as exc:
            if _code(exc) == "ExecutionDoesNotExist":
                return None
            raise WorkflowError(f"cannot describe execution {arn}: {_message(exc)}") from exc
        except BotoCoreError as exc:
            raise WorkflowError(f"cannot describe execution {arn}: {exc}") from exc
        return Execution(
            name=out["name"],
            arn=out["executionArn"],
            state=_state(out["status"]),
            error=out.get("error"),
            cause=out.get("cause"),
        )


def _state(status: str) -> ExecutionState:
    # A redrivable execution has failed; the port has no redrive.
    if status == "PENDING_REDRIVE":
        return ExecutionState.FAILED
    return ExecutionState(status)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
    return str(exc)
