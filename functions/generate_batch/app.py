"""State machine task: plan a generation, walk one lane batch by batch, finish.

Domain errors propagate: their class name is the error the ASL's Retry and Catch see. Every
write carries the execution's attempt; `StaleWorkerError` (the run was cancelled, proceeded or
moved on) ends the invocation at once, so a Lambda that outlived its execution stops there.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal
from uuid import UUID

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from deepmem.config import load_config, require, traced_clients
from deepmem.domain.chunks import Lane
from deepmem.domain.executions import execution_name
from deepmem.domain.status import Phase
from deepmem.services.generation import GenerationService, Handover, LaneSetup
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

logger = Logger()
tracer = Tracer(patch_modules=traced_clients("generate_batch"))
metrics = Metrics()


class _Task(BaseModel):
    model_config = ConfigDict(extra="ignore")

    run_id: UUID
    attempt: int = Field(ge=1)


class ExecutionInput(BaseModel):
    """The execution's own input: a handover's successor carries its segment and lanes."""

    model_config = ConfigDict(extra="ignore")

    segment: int = Field(default=0, ge=0)
    lanes: list[Lane] | None = None


class LaneEnd(BaseModel):
    """What each lane of the Map ends with."""

    model_config = ConfigDict(extra="ignore")

    lane: Lane


class PlanTask(_Task):
    action: Literal["plan"]
    execution: ExecutionInput = Field(default_factory=ExecutionInput)


class BatchTask(_Task):
    action: Literal["batch"]
    lane: Lane
    setup: LaneSetup | None = None  # the plan's, carried by the state machine


class FinishTask(_Task):
    action: Literal["finish"]
    execution: ExecutionInput = Field(default_factory=ExecutionInput)
    lanes: list[LaneEnd] | None = None  # the Map's results; None from an older execution


Task = Annotated[PlanTask | BatchTask | FinishTask, Field(discriminator="action")]
_TASK = TypeAdapter(Task)


@cache
def _service() -> GenerationService:
    from deepmem import wiring

    return wiring.build_generation_service(require(load_config(), "generate_batch"))


def handle(
    event: dict[str, Any], service: GenerationService, context: LambdaContext | None
) -> dict[str, Any]:
    task = _TASK.validate_python(event)
    logger.append_keys(run_id=str(task.run_id), phase="generating", attempt=task.attempt)
    if isinstance(task, PlanTask):
        plan = service.plan(
            task.run_id,
            attempt=task.attempt,
            segment=task.execution.segment,
            lanes=task.execution.lanes,
        )
        metrics.add_metric(name="ChunksPlanned", unit=MetricUnit.Count, value=plan.total_chunks)
        return plan.model_dump(mode="json")
    if isinstance(task, BatchTask):
        remaining = context.get_remaining_time_in_millis if context is not None else None
        progress = service.batch(
            task.run_id, task.lane, remaining_ms=remaining, setup=task.setup, attempt=task.attempt
        )
        metrics.add_metric(name="ChunksProcessed", unit=MetricUnit.Count, value=progress.new_chunks)
        metrics.add_metric(name="PairsWritten", unit=MetricUnit.Count, value=progress.new_pairs)
        metrics.add_metric(name="LlmCalls", unit=MetricUnit.Count, value=progress.llm_calls)
        metrics.add_metric(name="LlmRetries", unit=MetricUnit.Count, value=progress.retries)
        metrics.add_metric(name="LlmTokens", unit=MetricUnit.Count, value=progress.tokens_used)
        return progress.model_dump(mode="json")
    lanes = None if task.lanes is None else [end.lane for end in task.lanes]
    run = service.finish(
        task.run_id, attempt=task.attempt, lanes=lanes, segment=task.execution.segment
    )
    if isinstance(run, Handover):
        metrics.add_metric(name="Handovers", unit=MetricUnit.Count, value=1)
        return handover_output(run)
    return {
        "run_id": str(run.id),
        "attempt": run.attempt,
        "status": run.status.value,
        "total_chunks": run.total_chunks,
        "processed_chunks": run.processed_chunks,
        "pair_count": run.pair_count,
        "handover": False,
    }


def handover_output(handover: Handover) -> dict[str, Any]:
    """What `StartNextExecution` starts: the deterministic name and the input of the next
    execution of the attempt."""
    run_id = str(handover.run_id)
    return {
        "run_id": run_id,
        "attempt": handover.attempt,
        "status": "generating",
        "handover": True,
        "next_execution": {
            "name": execution_name(
                handover.run_id, Phase.GENERATING, handover.attempt, handover.segment
            ),
            "input": {
                "run_id": run_id,
                "phase": Phase.GENERATING.value,
                "attempt": handover.attempt,
                "segment": handover.segment,
                "lanes": [lane.model_dump(mode="json") for lane in handover.lanes],
            },
        },
    }


@tracer.capture_lambda_handler
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event, _service(), context)
