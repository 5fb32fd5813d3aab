"""The run use cases the API and the CLI share: start, train, proceed, cancel, delete, settings.

Every rule that must hold under concurrency is the store's (one unfinished run, compare-and-set
transitions); the workflow refuses a second execution of the same (run, phase, attempt). This
module only orders the calls so that no run is left stuck when an execution cannot start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from deepmem.domain.datasets import is_cloud_dataset
from deepmem.domain.errors import (
    DatasetMissingError,
    GeneratorNotConfiguredError,
    InvalidSettingsError,
    InvalidTransitionError,
    RunNotCancellableError,
    RunNotProceedableError,
    RunSourceChangedError,
    SettingsLockedError,
    UnfinishableRunError,
    WorkflowError,
)
from deepmem.domain.executions import execution_name
from deepmem.domain.handover import GenerationLimits, estimate_generation, require_finishable
from deepmem.domain.models import (
    DeleteOutcome,
    Settings,
    SettingsUpdate,
    TrainerKind,
    TrainingPair,
    TrainingRun,
)
from deepmem.domain.provenance import (
    UNNAMED_GENERATOR,
    GeneratorChoice,
    RunSource,
    source_mismatch,
)
from deepmem.domain.status import (
    ACTIVE_STATUSES,
    CANCELLED_MESSAGE,
    PROCEED_TARGETS,
    Phase,
    RunStatus,
    active_status,
    failed_status,
    phase_of,
)
from deepmem.domain.trainers import DEEP_MEMORY_MAX_PAIRS, deep_memory_refusal, effective_trainer
from deepmem.ports import Execution, ExecutionState, RunLeases, RunStore, Workflow

#: What an active run whose execution no longer exists keeps as its error.
ORPHANED_MESSAGE = "interrupted: its execution no longer exists (the process running it ended)"


def lease_expired_message(run_id: UUID, phase: Phase) -> str:
    """What a run whose local process stopped keeps as its error: what happened, the way out."""
    return (
        f"interrupted: the local deepmem process running its {phase.value} stopped (its lease "
        f"expired); resume it with `deepmem proceed {run_id}` (POST /proceed) or remove it "
        f"with `deepmem delete {run_id}`"
    )


@dataclass(frozen=True)
class RunExecution:
    """A run and the execution that drives it (or, after a cancel, the one stopped)."""

    run: TrainingRun
    execution: Execution


class SettingsView(BaseModel):
    """The settings as an admin sees them, with what currently holds them back."""

    model_config = ConfigDict(frozen=True)

    settings: Settings
    has_blocking_run: bool
    blocking_run_id: UUID | None
    blocking_run_status: RunStatus | None
    is_cloud: bool
    effective_trainer: TrainerKind | None
    generator: GeneratorChoice | None
    generator_problem: str | None
    embedding_model_in_use: str
    embedding_model_source: str


def _any_generator(settings: Settings) -> GeneratorChoice:
    return GeneratorChoice(kind=UNNAMED_GENERATOR)


def _always_present(dataset: str) -> bool:
    return True


def _unknown(dataset: str) -> str | None:
    return None


class RunService:
    def __init__(
        self,
        store: RunStore,
        workflow: Workflow,
        dataset: str,
        *,
        limits: GenerationLimits | None = None,
        generator_choice: Callable[[Settings], GeneratorChoice] = _any_generator,
        dataset_present: Callable[[str], bool] = _always_present,
        dataset_fingerprint: Callable[[str], str | None] = _unknown,
        embedding_model_of: Callable[[str], str | None] = _unknown,
        deep_memory_max_pairs: int = DEEP_MEMORY_MAX_PAIRS,
    ) -> None:
        """`generator_choice` raises GeneratorNotConfiguredError when none can run here;
        `dataset_fingerprint` and `embedding_model_of` answer None where the dataset cannot
        be read (an API function has no DeepLake): the plan checks the dataset again."""
        self.store = store
        self.workflow = workflow
        self.dataset = dataset
        self._generator_choice = generator_choice
        self._dataset_present = dataset_present
        self._dataset_fingerprint = dataset_fingerprint
        self._embedding_model_of = embedding_model_of
        self.limits = limits or GenerationLimits()
        self.deep_memory_max_pairs = deep_memory_max_pairs

    # starting executions

    def start_generation(self, user_id: UUID | None) -> RunExecution:
        """Create a `generating` run and start its execution.

        Raises BlockingRunExistsError while any run is unfinished (a repeated call included),
        WorkflowError when the execution could not start (the run is then `generating_failed`).
        Before any run exists: GeneratorNotConfiguredError when no generator can run,
        DatasetMissingError when the dataset does not exist.
        """
        self._generator_choice(self.store.get_settings())
        if not self._dataset_present(self.dataset):
            raise DatasetMissingError(
                f"no dataset at {self.dataset!r}: set DEEPMEM_DATASET to a DeepLake dataset, or "
                "build one from a folder of text files (`deepmem demo` builds its own)"
            )
        run = self.store.create_run(self.dataset, user_id)
        return self._start_execution(run, Phase.GENERATING)

    def start_training(self, run_id: UUID) -> RunExecution:
        """`generated` → `training`, then start the training execution. UnfinishableRunError
        (422) when the trainer it would use cannot take the run's pairs."""
        self.check_trainer_takes(self.store.get_run(run_id))
        moved = self.store.transition(run_id, RunStatus.GENERATED, RunStatus.TRAINING)
        if moved is None:
            current = self.store.get_run(run_id)
            raise InvalidTransitionError(run_id, current.status, RunStatus.TRAINING)
        return self._start_execution(moved, Phase.TRAINING)

    def proceed(self, run_id: UUID) -> RunExecution:
        """A failed run back into the phase it failed in, as a new attempt.

        Of two racing calls the compare-and-set lets one through; the other sees the run
        already active and gets RunNotProceedableError.
        """
        run = self.store.get_run(run_id)
        target = PROCEED_TARGETS.get(run.status)
        if target is None:
            raise RunNotProceedableError(run_id, run.status)
        self.check_source(run)
        if target is RunStatus.TRAINING:
            self.check_trainer_takes(run)
        moved = self.store.transition(run_id, run.status, target, next_attempt=True)
        if moved is None:
            raise RunNotProceedableError(run_id, self.store.get_run(run_id).status)
        phase = phase_of(target)
        assert phase is not None
        return self._start_execution(moved, phase)

    def check_trainer_takes(self, run: TrainingRun) -> None:
        """Deep Memory uploads a run's queries within one submit: over its limit, refuse."""
        kind = effective_trainer(self.store.get_settings(), run.dataset)
        if kind is TrainerKind.DEEP_MEMORY:
            refusal = deep_memory_refusal(run.pair_count, self.deep_memory_max_pairs)
            if refusal is not None:
                raise UnfinishableRunError(refusal)

    def check_source(self, run: TrainingRun) -> None:
        """RunSourceChangedError when `run` would resume over another version of its dataset
        (any phase: training reads the chunks its pairs name) or, for a failed generation,
        with another generator than the one that made its pairs. As far as this process can
        read the dataset; the plan checks it again."""
        fingerprint = self._dataset_fingerprint(run.dataset) if run.dataset_fingerprint else None
        generator, model = run.generator or UNNAMED_GENERATOR, run.llm_model
        if run.status is RunStatus.GENERATING_FAILED:
            choice = self._generator_choice(self.store.get_settings())
            if choice.kind != UNNAMED_GENERATOR:
                generator, model = str(choice.kind), choice.model
        current = RunSource(
            dataset_fingerprint=fingerprint or run.dataset_fingerprint or "",
            generator=generator,
            llm_model=model,
        )
        mismatch = source_mismatch(run, current)
        if mismatch is not None:
            raise RunSourceChangedError(run.id, run.status, mismatch)

    def _start_execution(self, run: TrainingRun, phase: Phase) -> RunExecution:
        try:
            execution = self.workflow.start(run.id, phase, run.attempt)
        except Exception as exc:
            # Nothing will ever move this run on: record why, so it can be proceeded or deleted.
            self.store.transition(
                run.id,
                active_status(phase),
                failed_status(phase),
                error_message=f"the {phase.value} execution could not start: {exc}",
            )
            if isinstance(exc, WorkflowError):
                raise
            raise WorkflowError(f"the {phase.value} execution could not start: {exc}") from exc
        return RunExecution(run=run, execution=execution)

    def cancel(self, run_id: UUID) -> RunExecution:
        """Stop the execution of an active run; the run ends in its phase's failed status.

        The record_failure safety net (EventBridge) would write the same status; writing it here
        too makes cancel complete where no EventBridge runs (locally) and the write is a
        compare-and-set, so whichever comes second changes nothing. A run whose execution no
        longer runs (it never existed, or ended without moving the run: an orphan) is marked
        failed at once; if the engine cannot stop a running one, the run stays active (a
        WorkflowError): marking it failed would let a proceed start a second execution.

        The run keeps its attempt, so the worker still running (a Lambda outlives its stopped
        execution) has its next batch recorded and is told to stop; after a proceed, the new
        attempt refuses it (StaleWorkerError): see docs/architecture.md, "Cancel and stale
        workers".
        """
        run = self.store.get_run(run_id)
        if run.status not in ACTIVE_STATUSES:
            raise RunNotCancellableError(run_id, run.status)
        phase = phase_of(run.status)
        assert phase is not None
        execution = self.workflow.describe(run.id, phase, run.attempt)
        if execution is not None and execution.state is ExecutionState.RUNNING:
            self.workflow.stop(run.id, phase, run.attempt, cause=CANCELLED_MESSAGE)
            execution = self.workflow.describe(run.id, phase, run.attempt) or execution
        self._fail(run, phase, CANCELLED_MESSAGE)
        if execution is None:
            name = execution_name(run.id, phase, run.attempt)
            execution = Execution(name=name, arn=name, state=ExecutionState.ABORTED)
        return RunExecution(run=self.store.get_run(run_id), execution=execution)

    def fail_if_orphaned(self, run_id: UUID, reason: str = ORPHANED_MESSAGE) -> TrainingRun:
        """An active run whose execution no longer exists (it never started, or, locally, the
        process that ran it ended) is failed with its phase's status and `reason`, so it can be
        proceeded or deleted; in AWS the EventBridge safety net does the same for executions
        that end without moving their run. Any other run is returned as it is."""
        run = self.store.get_run(run_id)
        phase = phase_of(run.status)
        if run.status not in ACTIVE_STATUSES or phase is None:
            return run
        if self.workflow.describe(run.id, phase, run.attempt) is not None:
            return run
        return self._fail(run, phase, reason)

    def fail_lost_local_runs(self, leases: RunLeases) -> list[TrainingRun]:
        """See `fail_lost_local_runs` (the module function, which needs no workflow)."""
        return fail_lost_local_runs(self.store, leases)

    def _fail(self, run: TrainingRun, phase: Phase, reason: str) -> TrainingRun:
        return fail_run(self.store, run, phase, reason)

    # reading and deleting

    def delete(self, run_id: UUID) -> DeleteOutcome:
        return self.store.delete_run(run_id)

    def list_runs(self, limit: int = 50, offset: int = 0) -> list[TrainingRun]:
        return self.store.list_runs(limit=limit, offset=offset)

    def get_run(self, run_id: UUID) -> TrainingRun:
        return self.store.get_run(run_id)

    def list_pairs(self, run_id: UUID, limit: int = 100, offset: int = 0) -> list[TrainingPair]:
        self.store.get_run(run_id)  # an unknown run is a RunNotFoundError, not an empty page
        return self.store.list_pairs(run_id, limit=limit, offset=offset)

    # settings

    def get_settings_view(self) -> SettingsView:
        return self._view(self.store.get_settings())

    def update_settings(self, update: SettingsUpdate) -> SettingsView:
        """Raise SettingsLockedError while a run is generating or training (the store checks
        it again in the same transaction as the write)."""
        blocking = self.store.find_blocking_run()
        if blocking is not None and blocking.status in ACTIVE_STATUSES:
            raise SettingsLockedError(blocking.id, blocking.status)
        settings = update.apply_to(self.store.get_settings())
        if effective_trainer(settings, self.dataset) is None:
            raise InvalidSettingsError(
                f"trainer '{settings.trainer}' is not available for dataset {self.dataset!r}: "
                "Deep Memory needs a hub:// dataset"
            )
        # The largest run these settings allow must be able to finish (the plan checks each
        # run's own chunk count again). Without a cap, only what no chunk count changes.
        largest = settings.max_chunks_per_run or settings.lanes
        require_finishable(estimate_generation(largest, settings, self.limits))
        return self._view(self.store.update_settings(settings))

    def _view(self, settings: Settings) -> SettingsView:
        blocking = self.store.find_blocking_run()
        try:
            generator, problem = self._generator_choice(settings), None
        except GeneratorNotConfiguredError as exc:
            generator, problem = None, str(exc)
        embedding_model, source = self._embedding_model_in_use(settings)
        return SettingsView(
            generator=generator,
            generator_problem=problem,
            embedding_model_in_use=embedding_model,
            embedding_model_source=source,
            settings=settings,
            has_blocking_run=blocking is not None,
            blocking_run_id=blocking.id if blocking else None,
            blocking_run_status=blocking.status if blocking else None,
            is_cloud=is_cloud_dataset(self.dataset),
            effective_trainer=effective_trainer(settings, self.dataset),
        )

    def _embedding_model_in_use(self, settings: Settings) -> tuple[str, str]:
        """The model that embeds questions and queries (training's rule: the dataset's own,
        else the setting) and where that was read: the dataset, the latest run of it, or the
        setting."""
        recorded = self._embedding_model_of(self.dataset)
        if recorded:
            return recorded, "dataset"
        for run in self.store.list_runs(limit=20):
            if run.dataset == self.dataset and run.embedding_model:
                return run.embedding_model, "run"
        return settings.embedding_model, "settings"


def fail_run(store: RunStore, run: TrainingRun, phase: Phase, reason: str) -> TrainingRun:
    """Compare-and-set from the phase's active status at the run's attempt: a run that moved
    on meanwhile is left as it is."""
    store.transition(
        run.id,
        active_status(phase),
        failed_status(phase),
        error_message=reason,
        attempt=run.attempt,
    )
    return store.get_run(run.id)


def fail_lost_local_runs(store: RunStore, leases: RunLeases) -> list[TrainingRun]:
    """The local safety net: every active run whose local execution's lease expired (its
    process was killed) is failed with its phase's status, through the same compare-and-set as
    `RunService.fail_if_orphaned`, as the EventBridge rule does in AWS. Runs driven by Step
    Functions hold no lease and are never touched. Returns the runs as they are afterwards."""
    failed = []
    for run in leases.expired_leases():
        phase = phase_of(run.status)
        if phase is not None:
            failed.append(fail_run(store, run, phase, lease_expired_message(run.id, phase)))
    return failed
