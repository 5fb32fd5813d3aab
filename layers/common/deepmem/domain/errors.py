"""Domain errors. Each ends in `Error`; `deepmem.api.errors` maps them to
HTTP by type; the Lambda tasks let them propagate, so their class name is the ASL error name."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uuid import UUID

    from deepmem.domain.handover import RunEstimate
    from deepmem.domain.status import RunStatus


API_PREFIX = "/v1/api/deep-memory"


def delete_hint(run_id: UUID | str) -> str:
    return f"delete it: `deepmem delete {run_id}` (DELETE {API_PREFIX}/runs/{run_id})"


def way_out_of(run_id: UUID | str, status: RunStatus | str) -> str:
    """How an admin gets a run out of the way, for its status: the CLI command and the API
    call. Every "blocked" message ends with it."""
    status = str(status)
    if status in ("generating", "training"):
        return (
            f"wait for it, or cancel it: `deepmem cancel {run_id}` "
            f"(POST {API_PREFIX}/runs/{run_id}/cancel)"
        )
    if status == "generated":
        return f"train it: `deepmem train {run_id}` (POST {API_PREFIX}/train), or " + delete_hint(
            run_id
        )
    return f"proceed it: `deepmem proceed {run_id}` (POST {API_PREFIX}/proceed), or " + delete_hint(
        run_id
    )


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
        super().__init__(
            "Cannot start new generation: an unfinished training run exists "
            f"(run {run_id}, {status}): {way_out_of(run_id, status)}"
        )
        self.blocking_run_id = str(run_id)
        self.blocking_run_status = str(status)


class RunNotDeletableError(InvalidTransitionError):
    """Only failed or generated runs may be deleted."""

    def __init__(
        self, run_id: UUID | str, current: RunStatus | str, target: RunStatus | str = "deleted"
    ) -> None:
        super().__init__(run_id, current, target)
        if str(current) in ("generating", "training"):
            self.args = (f"{self.args[0]}: {way_out_of(run_id, current)}, then delete it",)
        elif str(current) == "completed":
            self.args = (f"{self.args[0]}: a completed run is kept as history",)


class RunNotProceedableError(InvalidTransitionError):
    """Only a failed run can proceed."""

    def __init__(self, run_id: UUID | str, current: RunStatus | str) -> None:
        super().__init__(run_id, current, "proceed")
        self.args = (f"training run {run_id} is '{current}': only a failed run can proceed",)
        if str(current) in ("generating", "training", "generated"):
            self.args = (f"{self.args[0]}; {way_out_of(run_id, current)}",)


class RunNotCancellableError(InvalidTransitionError):
    """Only a generating or training run can be cancelled."""

    def __init__(self, run_id: UUID | str, current: RunStatus | str) -> None:
        super().__init__(run_id, current, "cancelled")
        self.args = (
            f"training run {run_id} is '{current}': only a generating or training run "
            "can be cancelled",
        )


class StaleWorkerError(InvalidTransitionError):
    """A worker's write was refused: the run is no longer at the worker's attempt, or no longer
    in its phase (cancelled, proceeded, failed, finished). The worker ends at once; an
    execution or Lambda that outlived its run's attempt stops here."""

    def __init__(
        self, run_id: UUID | str, current: RunStatus | str, run_attempt: int | str, attempt: int
    ) -> None:
        super().__init__(run_id, current, "a worker's write")
        self.run_attempt = str(run_attempt)
        self.attempt = attempt
        self.args = (
            f"training run {run_id} is '{current}' at attempt {run_attempt}: "
            f"the worker of attempt {attempt} must stop",
        )


class SettingsLockedError(DeepmemError):
    def __init__(self, run_id: UUID | str, status: RunStatus | str) -> None:
        super().__init__(
            f"settings cannot change while training run {run_id} is '{status}': "
            f"{way_out_of(run_id, status)}"
        )
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


class InvalidDataError(DeepmemError):
    """The store refused a value it cannot hold (SQLSTATE class 22: NUL in text, a bad
    Unicode escape, a number out of range). Another try sends the same value: never retried,
    and deliberately not a StoreError (which the state machine retries as transient)."""


class GenerationError(DeepmemError):
    """Question generation failed for good (no retry will help: bad key, bad request...)."""


class TransientGenerationError(GenerationError):
    """The LLM is overloaded or unreachable; the state machine retries this one."""


class IncompleteGenerationError(DeepmemError):
    """`finish` found chunks that were never processed."""


class RetryBudgetExhaustedError(GenerationError):
    """Too many chunks in a row failed after their retries: the run stops (`generating_failed`)
    rather than pay for an outage chunk after chunk. Not transient: the state machine does
    not retry it."""


class TooFewPairsError(DeepmemError):
    """`finish` refuses `generated`: the run holds fewer pairs than training needs."""


class RunSourceChangedError(DeepmemError):
    """A run would resume over another dataset (or another version of it) or with another
    generator than the one that produced its pairs."""

    def __init__(self, run_id: UUID | str, status: RunStatus | str, message: str) -> None:
        super().__init__(message)
        self.blocking_run_id = str(run_id)
        self.blocking_run_status = str(status)


class GeneratorNotConfiguredError(DeepmemError):
    """The configured generator cannot run here (an LLM without a key or endpoint)."""


class DatasetMissingError(DeepmemError):
    """The configured dataset does not exist (or has no chunks): nothing to generate from."""


class DatasetError(DeepmemError):
    """The DeepLake dataset is missing, unreadable or of the wrong shape."""


class EmbeddingError(DeepmemError):
    """Embedding failed."""


class TransientEmbeddingError(EmbeddingError):
    """The embeddings endpoint is rate limited, failing (5xx) or slow for now: another try may
    succeed (the state machine retries this one during training)."""


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
