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
from deepmem.services.generation import GenerationService, LaneSetup
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

logger = Logger()
tracer = Tracer(patch_modules=traced_clients("generate_batch"))
metrics = Metrics()


class _Task(BaseModel):
    model_config = ConfigDict(extra="ignore")

    run_id: UUID
    attempt: int = Field(ge=1)


class PlanTask(_Task):
    action: Literal["plan"]


class BatchTask(_Task):
    action: Literal["batch"]
    lane: Lane
    setup: LaneSetup | None = None  # the plan's, carried by the state machine


class FinishTask(_Task):
    action: Literal["finish"]


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
        plan = service.plan(task.run_id, attempt=task.attempt)
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
    run = service.finish(task.run_id, attempt=task.attempt)
    return {
        "run_id": str(run.id),
        "attempt": run.attempt,
        "status": run.status.value,
        "total_chunks": run.total_chunks,
        "processed_chunks": run.processed_chunks,
        "pair_count": run.pair_count,
    }


@tracer.capture_lambda_handler
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event, _service(), context)
