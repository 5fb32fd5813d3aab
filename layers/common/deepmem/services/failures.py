"""Record a phase's failure on its run: the Catch target of the state machine and its safety net.

Two sources report failures:
- the state machine's Catch (`FailureCaught`): a task of the phase failed after its retries;
- EventBridge "Step Functions Execution Status Change" (`ExecutionStatusChange`): an execution
  ended ABORTED, TIMED_OUT or FAILED, e.g. stopped from the console or killed by its timeout,
  where no Catch ran.

Both end in the same compare-and-set from the phase's active status to its failed status, and
only for the run's current attempt, so a late or duplicate report never overwrites a later state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict, Field

from deepmem.domain.errors import RunNotFoundError
from deepmem.domain.executions import parse_execution_name
from deepmem.domain.models import TrainingRun
from deepmem.domain.status import CANCELLED_MESSAGE, Phase, active_status, failed_status
from deepmem.ports import RunStore

logger = Logger(child=True)

#: Enough for a stack-free reason; the database column and the dashboard need no more.
ERROR_MESSAGE_LIMIT = 1000

TIMED_OUT_MESSAGE = "timed out"


class ExecutionStatus(StrEnum):
    ABORTED = "ABORTED"
    TIMED_OUT = "TIMED_OUT"
    FAILED = "FAILED"


class ErrorAndCause(BaseModel):
    """The `{Error, Cause}` object a Catch puts at its ResultPath."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    error: str = Field(default="States.Unknown", alias="Error")
    cause: str | None = Field(default=None, alias="Cause")


class FailureCaught(BaseModel):
    """What the state machine's RecordFailure state sends."""

    model_config = ConfigDict(extra="ignore")

    source: Literal["catch"] = "catch"
    run_id: UUID
    phase: Phase
    attempt: int = Field(ge=1)
    error: ErrorAndCause


class ExecutionStatusDetail(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    execution_arn: str = Field(alias="executionArn")
    state_machine_arn: str = Field(alias="stateMachineArn")
    name: str
    status: str
    error: str | None = None
    cause: str | None = None


class ExecutionStatusChange(BaseModel):
    """The EventBridge event Step Functions emits when an execution changes status."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    source: Literal["aws.states"]
    detail_type: Literal["Step Functions Execution Status Change"] = Field(alias="detail-type")
    detail: ExecutionStatusDetail


@dataclass(frozen=True)
class FailureReport:
    """One failure of one (run, phase, attempt), whatever reported it."""

    run_id: UUID
    phase: Phase
    attempt: int
    error_message: str


@dataclass(frozen=True)
class FailureOutcome:
    """What recording did: `run` is the failed run, or None when nothing changed and why."""

    report: FailureReport | None
    run: TrainingRun | None
    skipped: str | None = None

    @property
    def recorded(self) -> bool:
        return self.run is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "recorded": self.recorded,
            "run_id": str(self.report.run_id) if self.report else None,
            "phase": self.report.phase.value if self.report else None,
            "attempt": self.report.attempt if self.report else None,
            "status": self.run.status.value if self.run else None,
            "skipped": self.skipped,
        }


def describe_error(error: str | None, cause: str | None, limit: int = ERROR_MESSAGE_LIMIT) -> str:
    """`"ErrorName: message"`, readable and bounded.

    A Lambda task's Cause is the function's error JSON; its `errorMessage` is what a person
    wants to read, not the stack trace around it.
    """
    name = (error or "").strip() or "Error"
    reason = (cause or "").strip()
    if reason.startswith("{"):
        try:
            parsed = json.loads(reason)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("errorMessage"), str):
            reason = parsed["errorMessage"].strip()
    text = f"{name}: {reason}" if reason else name
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def report_from_catch(event: FailureCaught) -> FailureReport:
    return FailureReport(
        run_id=event.run_id,
        phase=event.phase,
        attempt=event.attempt,
        error_message=describe_error(event.error.error, event.error.cause),
    )


def report_from_status_change(event: ExecutionStatusChange) -> FailureReport | None:
    """None for a status that is not a failure (SUCCEEDED, RUNNING...)."""
    detail = event.detail
    try:
        status = ExecutionStatus(detail.status)
    except ValueError:
        return None
    run_id, phase, attempt = parse_execution_name(detail.name)
    if status is ExecutionStatus.ABORTED:
        message = CANCELLED_MESSAGE
    elif status is ExecutionStatus.TIMED_OUT:
        message = TIMED_OUT_MESSAGE
    else:
        message = describe_error(detail.error or "ExecutionFailed", detail.cause)
    return FailureReport(run_id=run_id, phase=phase, attempt=attempt, error_message=message)


def record_failure(store: RunStore, report: FailureReport) -> FailureOutcome:
    """Move the run from the phase's active status to its failed status, keeping the error.

    Compare-and-set: a run that already moved on (failed by the Catch, proceeded, completed,
    deleted) is left as it is.
    """
    try:
        run = store.get_run(report.run_id)
    except RunNotFoundError:
        # Deleted meanwhile: nothing is left to mark failed.
        logger.info("failure of a run that no longer exists ignored")
        return FailureOutcome(report=report, run=None, skipped="not_found")
    if run.attempt != report.attempt:
        # An older execution's report must never fail a newer attempt of the same run.
        logger.info(
            "failure of an old attempt ignored",
            extra={"run_attempt": run.attempt, "reported_attempt": report.attempt},
        )
        return FailureOutcome(report=report, run=None, skipped="stale_attempt")
    try:
        failed = store.transition(
            report.run_id,
            active_status(report.phase),
            failed_status(report.phase),
            error_message=report.error_message,
            attempt=report.attempt,
        )
    except RunNotFoundError:
        logger.info("failure of a run that no longer exists ignored")
        return FailureOutcome(report=report, run=None, skipped="not_found")
    if failed is None:
        logger.info(
            "run no longer in this attempt's active status; failure not recorded",
            extra={"last_seen_status": run.status.value},
        )
        return FailureOutcome(report=report, run=None, skipped="not_active")
    logger.warning(
        "run failed",
        extra={"status": failed.status.value, "error_message": report.error_message},
    )
    return FailureOutcome(report=report, run=failed)
