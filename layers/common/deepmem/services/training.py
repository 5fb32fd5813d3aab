"""Training use cases, called by the state machine's train task: submit a job, check it.

- `submit(run_id)`: the run must be `training`. If the run already carries a job id of the
  trainer now chosen and that job is pending, training or completed, it is reused: a retried
  submit or a proceed never starts a second job (for Deep Memory a second `train()` would
  overwrite `<dataset>_queries` under the running one). Otherwise every pair of the run goes
  to `trainer.submit` and the job id is kept on the run.
- `check(run_id, job_id)`: a completed job writes its metrics and moves the run
  `training → completed` by compare-and-set; a failed one raises `TrainingError` carrying the
  trainer's own message (the Catch records `training_failed` with it); otherwise the state
  and a suggested wait, growing with the number of polls (or the job's age).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from deepmem.domain.errors import StaleWorkerError, TrainingError
from deepmem.domain.models import TrainerKind, TrainingPair, TrainingRun
from deepmem.domain.status import RunStatus
from deepmem.domain.trainers import ADAPTER_KINDS, choose_trainer, kind_of_job
from deepmem.ports import JobState, JobStatus, RunStore, Trainer

PAIR_PAGE = 1000

#: (kind, run, embedding model) -> the trainer that trains that run's dataset with that kind,
#: embedding the run's questions with that model.
TrainerFactory = Callable[[TrainerKind, TrainingRun, str], Trainer]

#: dataset -> the embedding model its info records (the dataset builder writes it), or None.
RecordedEmbeddingModel = Callable[[str], str | None]


def _nothing_recorded(dataset: str) -> str | None:
    return None


def needs_resubmit(status: JobStatus) -> bool:
    """Resubmit only over a failed or unknown job (trainers report unknown as failed): a job
    still pending/training is polled again, a completed one is kept."""
    return status.state is JobState.FAILED


def suggest_wait(
    kind: TrainerKind, state: JobState, poll: int | None, age_seconds: float | None = None
) -> int:
    """Seconds the state machine should wait before the next check.

    The query adapters train inside `submit`: its job is done at once. Deep Memory jobs take
    minutes to hours: exponential backoff over the polls (30 s doubling to 10 min), or when
    the poll count is unknown a quarter of the job's age within the same bounds.
    """
    if kind in ADAPTER_KINDS or state is JobState.COMPLETED:
        return 0
    base, cap = 30, 600
    if poll is not None:
        return int(min(cap, base * 2 ** min(poll, 10)))
    if age_seconds is not None:
        return int(min(cap, max(base, age_seconds / 4)))
    return base


@dataclass(frozen=True)
class TrainingStep:
    run_id: UUID
    job_id: str
    state: JobState
    wait_seconds: int
    poll: int = 0
    reused: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "job_id": self.job_id,
            "state": self.state.value,
            "wait_seconds": self.wait_seconds,
            "poll": self.poll,
        }


class TrainingService:
    def __init__(
        self,
        store: RunStore,
        trainers: TrainerFactory,
        recorded_embedding_model: RecordedEmbeddingModel = _nothing_recorded,
    ) -> None:
        self.store = store
        self.trainers = trainers
        self.recorded_embedding_model = recorded_embedding_model

    def embedding_model(self, dataset: str) -> str:
        """The model that embeds a run's questions, and a search's query: the one that built
        the dataset, as its info records it, else the `embedding_model` setting. Questions
        must land in the space of the chunk embeddings they are matched against."""
        recorded = self.recorded_embedding_model(dataset)
        return recorded or self.store.get_settings().embedding_model

    def _trainer(self, kind: TrainerKind, run: TrainingRun) -> Trainer:
        return self.trainers(kind, run, self.embedding_model(run.dataset))

    def _training_run(self, run_id: UUID, attempt: int | None) -> TrainingRun:
        run = self.store.get_run(run_id)
        if attempt is not None and attempt != run.attempt:
            # An execution of an older attempt must not act on the run's newer one.
            raise StaleWorkerError(run_id, run.status, run.attempt, attempt)
        return run

    def pair_pages(self, run_id: UUID, page_size: int = PAIR_PAGE) -> Iterator[list[TrainingPair]]:
        """The run's pairs in id order, a keyset page at a time (`(run_id, id) > last`): each
        page costs the same wherever it is in the run, never an OFFSET scan."""
        after = 0
        while True:
            page = self.store.pairs_after(run_id, after=after, limit=page_size)
            if page:
                yield page
                after = page[-1].id
            if len(page) < page_size:
                return

    def all_pairs(self, run_id: UUID) -> list[TrainingPair]:
        return list(self.iter_pairs(run_id))

    def iter_pairs(self, run_id: UUID) -> Iterator[TrainingPair]:
        """The run's pairs, a page in memory at a time."""
        for page in self.pair_pages(run_id):
            yield from page

    def submit(self, run_id: UUID, attempt: int | None = None) -> TrainingStep:
        run = self._training_run(run_id, attempt)
        if run.status is not RunStatus.TRAINING:
            raise StaleWorkerError(run_id, run.status, run.attempt, run.attempt)
        kind = choose_trainer(self.store.get_settings().trainer, run.dataset)
        trainer = self._trainer(kind, run)
        if run.deeplake_job_id and kind_of_job(run.deeplake_job_id) is kind:
            status = trainer.check(run.deeplake_job_id)
            if not needs_resubmit(status):
                return TrainingStep(
                    run_id=run.id,
                    job_id=run.deeplake_job_id,
                    state=status.state,
                    wait_seconds=suggest_wait(kind, status.state, 0),
                    reused=True,
                )
        job_id = trainer.submit(run, self.iter_pairs(run.id))
        self.store.set_training_job(run.id, job_id, attempt=run.attempt)
        return TrainingStep(
            run_id=run.id,
            job_id=job_id,
            state=JobState.PENDING,
            wait_seconds=suggest_wait(kind, JobState.PENDING, 0),
        )

    def check(
        self, run_id: UUID, job_id: str, attempt: int | None = None, poll: int | None = None
    ) -> TrainingStep:
        run = self._training_run(run_id, attempt)
        next_poll = (poll or 0) + 1
        if run.status is RunStatus.COMPLETED and run.deeplake_job_id == job_id:
            # A retried check after the transition went through: nothing left to do.
            return TrainingStep(
                run.id, job_id, JobState.COMPLETED, 0, next_poll, reused=True, metrics=run.metrics
            )
        if run.status is not RunStatus.TRAINING:  # cancelled, or failed meanwhile
            raise StaleWorkerError(run_id, run.status, run.attempt, run.attempt)
        kind = kind_of_job(job_id)
        status = self._trainer(kind, run).check(job_id)
        if status.state is JobState.FAILED:
            raise TrainingError(status.error or f"training job {job_id} failed")
        if status.state is JobState.COMPLETED:
            self.store.set_metrics(run.id, status.metrics, attempt=run.attempt)
            moved = self.store.transition(
                run.id, RunStatus.TRAINING, RunStatus.COMPLETED, attempt=run.attempt
            )
            if moved is None:
                current = self.store.get_run(run.id)
                if current.status is not RunStatus.COMPLETED:
                    raise StaleWorkerError(run.id, current.status, current.attempt, run.attempt)
            return TrainingStep(
                run.id, job_id, JobState.COMPLETED, 0, next_poll, metrics=status.metrics
            )
        updated = run.updated_at if run.updated_at.tzinfo else run.updated_at.replace(tzinfo=UTC)
        age = (datetime.now(UTC) - updated).total_seconds()
        return TrainingStep(
            run_id=run.id,
            job_id=job_id,
            state=status.state,
            wait_seconds=suggest_wait(kind, status.state, poll, age),
            poll=next_poll,
        )
