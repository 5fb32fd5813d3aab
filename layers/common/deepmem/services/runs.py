"""The run use cases the API and the CLI share: start, train, proceed, cancel, delete, settings.

Every rule that must hold under concurrency is the store's (one unfinished run, compare-and-set
transitions); the workflow refuses a second execution of the same (run, phase, attempt). This
module only orders the calls so that no run is left stuck when an execution cannot start.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from deepmem.domain.datasets import is_cloud_dataset
from deepmem.domain.errors import (
    InvalidSettingsError,
    InvalidTransitionError,
    RunNotCancellableError,
    RunNotProceedableError,
    SettingsLockedError,
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
from deepmem.domain.trainers import effective_trainer
from deepmem.ports import Execution, ExecutionState, RunStore, Workflow

#: What an active run whose execution no longer exists keeps as its error.
ORPHANED_MESSAGE = "interrupted: its execution no longer exists (the process running it ended)"


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


class RunService:
    def __init__(
        self,
        store: RunStore,
        workflow: Workflow,
        dataset: str,
        limits: GenerationLimits | None = None,
    ) -> None:
        self.store = store
        self.workflow = workflow
        self.dataset = dataset
        self.limits = limits or GenerationLimits()

    # starting executions

    def start_generation(self, user_id: UUID | None) -> RunExecution:
        """Create a `generating` run and start its execution.

        Raises BlockingRunExistsError while any run is unfinished (a repeated call included),
        WorkflowError when the execution could not start (the run is then `generating_failed`).
        """
        run = self.store.create_run(self.dataset, user_id)
        return self._start_execution(run, Phase.GENERATING)

    def start_training(self, run_id: UUID) -> RunExecution:
        """`generated` → `training`, then start the training execution."""
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
        moved = self.store.transition(run_id, run.status, target, next_attempt=True)
        if moved is None:
            raise RunNotProceedableError(run_id, self.store.get_run(run_id).status)
        phase = phase_of(target)
        assert phase is not None
        return self._start_execution(moved, phase)

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

    def _fail(self, run: TrainingRun, phase: Phase, reason: str) -> TrainingRun:
        """Compare-and-set from the phase's active status at the run's attempt: a run that
        moved on meanwhile is left as it is."""
        self.store.transition(
            run.id,
            active_status(phase),
            failed_status(phase),
            error_message=reason,
            attempt=run.attempt,
        )
        return self.store.get_run(run.id)

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
        return SettingsView(
            settings=settings,
            has_blocking_run=blocking is not None,
            blocking_run_id=blocking.id if blocking else None,
            blocking_run_status=blocking.status if blocking else None,
            is_cloud=is_cloud_dataset(self.dataset),
            effective_trainer=effective_trainer(settings, self.dataset),
        )
