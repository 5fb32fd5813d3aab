"""State machine task: submit a training job, check it.

Event: `{"action": "submit"|"check", "run_id": uuid, "attempt": int, "job_id": str|None,
"poll": int (optional, for backoff)}`. Response: `{"run_id", "job_id", "state", "wait_seconds",
"poll"}`; the ASL waits `wait_seconds` and checks again until `state` is `completed`.
Domain errors propagate: their class name is the error the ASL's Retry and Catch see
(`TransientTrainingError` is retried; `TrainingError`, `NotEnoughPairsError` fail the run).
"""

# No `from __future__ import annotations`: pydantic resolves the fields of a model defined in a
# module loaded from its file path (not in sys.modules) only from real annotations.
from functools import cache
from typing import Any, Literal
from uuid import UUID

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from deepmem.config import load_config, require, traced_clients
from deepmem.ports import JobState
from deepmem.services.training import TrainingService
from pydantic import BaseModel, ConfigDict, Field, model_validator

logger = Logger()
tracer = Tracer(patch_modules=traced_clients("train"))
metrics = Metrics()


class TrainTask(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action: Literal["submit", "check"]
    run_id: UUID
    attempt: int = Field(ge=1)
    job_id: str | None = Field(default=None, min_length=1, max_length=512)
    poll: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _check_needs_a_job(self) -> "TrainTask":
        if self.action == "check" and not self.job_id:
            raise ValueError("a check needs the job_id that submit returned")
        return self


@cache
def _service() -> TrainingService:
    from deepmem import wiring

    return wiring.build_training_service(require(load_config(), "train"))


def handle(event: dict[str, Any], service: TrainingService) -> dict[str, Any]:
    task = TrainTask.model_validate(event)
    logger.append_keys(run_id=str(task.run_id), phase="training", attempt=task.attempt)
    if task.action == "submit":
        step = service.submit(task.run_id, attempt=task.attempt)
        logger.info(
            "training job reused" if step.reused else "training job submitted",
            extra={"job_id": step.job_id, "state": step.state.value},
        )
        if not step.reused:
            metrics.add_metric(name="TrainingJobsSubmitted", unit=MetricUnit.Count, value=1)
        return step.as_dict()
    assert task.job_id is not None
    step = service.check(task.run_id, task.job_id, attempt=task.attempt, poll=task.poll)
    logger.info(
        "training job checked",
        extra={"job_id": step.job_id, "state": step.state.value, "wait_seconds": step.wait_seconds},
    )
    if step.state is JobState.COMPLETED and not step.reused:
        logger.info("training completed", extra={"metrics": step.metrics})
        metrics.add_metric(name="TrainingJobsCompleted", unit=MetricUnit.Count, value=1)
    return step.as_dict()


@tracer.capture_lambda_handler
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event, _service())
