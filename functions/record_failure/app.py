"""Record a phase's failure on its run.

Invoked by the state machine's RecordFailure states (`{"source": "catch", ...}`) and by the
EventBridge rule on "Step Functions Execution Status Change" (ABORTED, TIMED_OUT, FAILED),
the safety net for executions that ended where no Catch could run.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from deepmem.config import load_config, require, traced_clients
from deepmem.domain.errors import NotOurExecutionError
from deepmem.ports import RunStore
from deepmem.services.failures import (
    ExecutionStatusChange,
    FailureCaught,
    FailureOutcome,
    record_failure,
    report_from_catch,
    report_from_status_change,
)
from pydantic import ValidationError

logger = Logger()
tracer = Tracer(patch_modules=traced_clients("record_failure"))
metrics = Metrics()


def _store() -> RunStore:
    from deepmem import wiring

    return wiring.shared_run_store(require(load_config(), "record_failure"))


def handle(event: dict[str, Any], store: RunStore, state_machine_arn: str | None) -> dict[str, Any]:
    """Parse either event shape and record the failure it reports.

    `state_machine_arn`, when set, is the only state machine whose status changes count: the
    rule already filters on it, this keeps a misrouted event from failing a run.
    """
    if event.get("source") == "aws.states":
        change = ExecutionStatusChange.model_validate(event)
        if state_machine_arn and change.detail.state_machine_arn != state_machine_arn:
            logger.warning(
                "status change of another state machine ignored",
                extra={"state_machine_arn": change.detail.state_machine_arn},
            )
            return FailureOutcome(report=None, run=None, skipped="other_state_machine").as_dict()
        try:
            report = report_from_status_change(change)
        except NotOurExecutionError:
            logger.warning(
                "status change of a foreign execution ignored",
                extra={"execution_name": change.detail.name},
            )
            return FailureOutcome(report=None, run=None, skipped="foreign_execution").as_dict()
        if report is None:
            return FailureOutcome(report=None, run=None, skipped="not_a_failure").as_dict()
        source = "event"
    else:
        report = report_from_catch(FailureCaught.model_validate(event))
        source = "catch"
    logger.append_keys(
        run_id=str(report.run_id), phase=report.phase.value, attempt=report.attempt, source=source
    )
    outcome = record_failure(store, report)
    if outcome.recorded:
        # The function emits no other metric, so the phase dimension can sit on the set.
        metrics.add_dimension(name="phase", value=report.phase.value)
        metrics.add_metric(name="RunsFailed", unit=MetricUnit.Count, value=1)
    return outcome.as_dict()


@tracer.capture_lambda_handler
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return handle(event, _store(), load_config().state_machine_arn)
    except ValidationError:
        # A malformed event is a bug upstream; raising lets Retry/Catch and the DLQ see it.
        logger.exception("record_failure got an event it cannot read")
        raise
