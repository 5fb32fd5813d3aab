"""Domain errors. Each ends in `Error`; `deepmem.api.errors` maps them to
HTTP by type; the Lambda tasks let them propagate, so their class name is the ASL error name."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uuid import UUID

    from deepmem.domain.handover import RunEstimate
    from deepmem.domain.status import RunStatus


class DeepmemError(Exception):
    """Base of every error deepmem raises on purpose."""


class RunNotFoundError(DeepmemError):
    def __init__(self, run_id: UUID | str) -> None:
        super().__init__(f"training run {run_id} not found")
        self.run_id = str(run_id)


class InvalidTransitionError(DeepmemError):
    def __init__(
        self, run_id: UUID | str, current: RunStatus | str, target: RunStatus | str
    ) -> None:
        super().__init__(f"training run {run_id} is '{current}': it cannot move to '{target}'")
        self.run_id = str(run_id)
        self.current = str(current)
        self.target = str(target)


class BlockingRunExistsError(DeepmemError):
    def __init__(self, run_id: UUID | str, status: RunStatus | str) -> None:
        super().__init__("Cannot start new generation: an unfinished training run exists")
        self.blocking_run_id = str(run_id)
        self.blocking_run_status = str(status)


class RunNotDeletableError(InvalidTransitionError):
    """Only failed or generated runs may be deleted."""


class RunNotProceedableError(InvalidTransitionError):
    """Only a failed run can proceed."""

    def __init__(self, run_id: UUID | str, current: RunStatus | str) -> None:
        super().__init__(run_id, current, "proceed")
        self.args = (f"training run {run_id} is '{current}': only a failed run can proceed",)


class RunNotCancellableError(InvalidTransitionError):
    """Only a generating or training run can be cancelled."""

    def __init__(self, run_id: UUID | str, current: RunStatus | str) -> None:
        super().__init__(run_id, current, "cancelled")
        self.args = (
            f"training run {run_id} is '{current}': only a generating or training run "
            "can be cancelled",
        )


class SettingsLockedError(DeepmemError):
    def __init__(self, run_id: UUID | str, status: RunStatus | str) -> None:
        super().__init__(f"settings cannot change while training run {run_id} is '{status}'")
        self.blocking_run_id = str(run_id)
        self.blocking_run_status = str(status)


class InvalidSettingsError(DeepmemError):
    """Settings that validate alone but cannot work here (Deep Memory on a local dataset)."""


class UnfinishableRunError(DeepmemError):
    """Settings under which a generation cannot finish (its estimate says why)."""

    def __init__(self, message: str, estimate: RunEstimate | None = None) -> None:
        super().__init__(message)
        self.estimate = estimate


class ConfigurationError(DeepmemError):
    """The environment does not say enough to build a part."""


class StoreError(DeepmemError):
    """The run store could not be reached or answered unexpectedly."""


class GenerationError(DeepmemError):
    """Question generation failed for good (no retry will help: bad key, bad request...)."""


class TransientGenerationError(GenerationError):
    """The LLM is overloaded or unreachable; the state machine retries this one."""


class IncompleteGenerationError(DeepmemError):
    """`finish` found chunks that were never processed."""


class DatasetError(DeepmemError):
    """The DeepLake dataset is missing, unreadable or of the wrong shape."""


class EmbeddingError(DeepmemError):
    """Embedding failed."""


class TrainingError(DeepmemError):
    """The training job failed; the message is the trainer's own."""


class TransientTrainingError(TrainingError):
    """The trainer's service is unreachable for now; the state machine retries this one."""


class NotEnoughPairsError(TrainingError):
    """Too few pairs to train on."""


class WorkflowError(DeepmemError):
    """The workflow engine refused or failed a request."""


class ExecutionAlreadyExistsError(WorkflowError):
    """An execution with that (run, phase, attempt) name already exists."""


class NotOurExecutionError(DeepmemError):
    """The execution's name is not `<run>-<phase>-<attempt>`: it is not one of ours."""
