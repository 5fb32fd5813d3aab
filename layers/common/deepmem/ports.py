"""The ports: what the services need from the outside world. Adapters implement them."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

from deepmem.domain.chunks import Chunk
from deepmem.domain.models import (
    BatchOutcome,
    BatchRecord,
    DeleteOutcome,
    Settings,
    TrainingPair,
    TrainingRun,
)
from deepmem.domain.provenance import RunSource
from deepmem.domain.status import Phase, RunStatus


class RunStore(Protocol):
    """Runs, pairs and settings. Every rule of the run lifecycle (`deepmem.domain.status`,
    `supabase/migrations`) is enforced behind this port."""

    def create_run(
        self, dataset: str, user_id: UUID | None, run_id: UUID | None = None
    ) -> TrainingRun:
        """Create a `generating` run; raise BlockingRunExistsError when any run is unfinished."""
        ...

    def get_run(self, run_id: UUID) -> TrainingRun:
        """Raise RunNotFoundError when unknown."""
        ...

    def list_runs(self, limit: int = 50, offset: int = 0) -> list[TrainingRun]:
        """Newest first."""
        ...

    def find_blocking_run(self) -> TrainingRun | None: ...

    def transition(
        self,
        run_id: UUID,
        expected: RunStatus | Sequence[RunStatus],
        target: RunStatus,
        *,
        error_message: str | None = None,
        next_attempt: bool = False,
        attempt: int | None = None,
    ) -> TrainingRun | None:
        """Compare-and-set: move from one of `expected` to `target`; None when the run was
        not in an expected status (or, with `attempt`, not at that attempt). Raise
        InvalidTransitionError for a move `deepmem.domain.status.TRANSITIONS` forbids,
        RunNotFoundError when unknown. Entering an active status clears the error;
        `next_attempt` increments `attempt`."""
        ...

    # A worker's writes carry its attempt: each raises StaleWorkerError when the run is no
    # longer at that attempt or no longer in the write's phase.

    def set_total_chunks(
        self,
        run_id: UUID,
        total_chunks: int,
        *,
        attempt: int,
        estimate: dict[str, Any] | None = None,
    ) -> TrainingRun:
        """The plan's chunk count and, when given, its estimate (`RunEstimate`), kept on a
        `generating` run."""
        ...

    def set_training_job(self, run_id: UUID, job_id: str | None, *, attempt: int) -> TrainingRun:
        """Keep the trainer's job id on a `training` run."""
        ...

    def set_metrics(self, run_id: UUID, metrics: dict[str, Any], *, attempt: int) -> TrainingRun:
        """On a `training` run."""
        ...

    def record_batch(self, batch: BatchRecord) -> BatchOutcome:
        """Pairs + processed chunk ids + counters in one transaction. Chunks already
        processed are ignored whole, so a retried batch changes nothing. The outcome says
        which of `batch.look_up` the run has processed once the batch is written, so a lane
        asks about its next batch in the same round trip. At `batch.attempt`, a run that is
        `generating` records it; one that is `generating_failed` (cancelled, or failed by
        another lane) records it too, so answers already paid for are kept, and says `stop`.
        Raise StaleWorkerError at any other attempt or status (even for no chunks)."""
        ...

    def processed_chunk_ids(self, run_id: UUID, chunk_ids: Sequence[str]) -> set[str]:
        """Which of `chunk_ids` this run has already processed."""
        ...

    def record_chunk_failures(self, run_id: UUID, failed: int, attempt: int) -> int:
        """Add `failed` chunks to the run's streak of failed chunks (any recorded answer ends
        a streak; so does a proceed); return the streak. StaleWorkerError when the run is not
        `generating` at the worker's `attempt`."""
        ...

    def set_run_source(self, run_id: UUID, source: RunSource, *, attempt: int) -> TrainingRun:
        """Record what the run's pairs come from, unless already recorded: the returned run
        holds what was recorded first. StaleWorkerError when the run is not `generating` at
        the worker's `attempt`."""
        ...

    def list_pairs(self, run_id: UUID, limit: int = 100, offset: int = 0) -> list[TrainingPair]:
        """Ordered by id (insertion order). For small pages; a full read uses `pairs_after`."""
        ...

    def pairs_after(self, run_id: UUID, after: int = 0, limit: int = 1000) -> list[TrainingPair]:
        """The next `limit` pairs (at most 10,000) with an id above `after`, ordered by id: a
        keyset page, as cheap at the end of a run as at its start."""
        ...

    def delete_run(self, run_id: UUID) -> DeleteOutcome:
        """Only failed or generated runs; raise RunNotDeletableError otherwise."""
        ...

    def get_settings(self) -> Settings: ...

    def update_settings(self, settings: Settings) -> Settings:
        """Raise SettingsLockedError while a run is generating or training."""
        ...


class RunLeases(Protocol):
    """A local execution's lease on its run (the local safety net): the process running it
    renews the lease; an active run whose lease expired has lost its process. Executions in
    Step Functions never take one. The run stores implement it."""

    def renew_lease(self, run_id: UUID, attempt: int, owner: str, ttl_seconds: float) -> bool:
        """Take or renew `owner`'s lease on the run's `attempt` for `ttl_seconds`; False when
        the run is not active at that attempt or another owner holds an unexpired lease."""
        ...

    def expired_leases(self) -> list[TrainingRun]:
        """Active runs whose current attempt's lease has expired, oldest first."""
        ...


class ChunkSource(Protocol):
    """Read a DeepLake dataset by index ranges."""

    def count(self) -> int: ...

    def fingerprint(self) -> str:
        """A digest of the dataset's chunk ids, in order, and its version: another dataset at
        the same path, or chunks added, removed or re-ordered, give another digest."""
        ...

    def read(self, start: int, stop: int) -> list[Chunk]:
        """Chunks with index in [start, stop), in index order."""
        ...


@dataclass(frozen=True)
class GeneratedQuestions:
    """What the generator made of one chunk."""

    chunk_id: str
    questions: list[str]
    llm_calls: int = 1
    tokens_used: int = 0
    retries: int = 0


class Pacer(Protocol):
    """Turns for the LLM calls of one lane call: every attempt, retries included, takes one,
    and a refusal for load is reported as it comes back, so one pace governs them all."""

    async def turn(self) -> float:
        """Wait for the next attempt's turn; return when it was given (names the attempt)."""
        ...

    def pushed_back(self, sent: float, retry_after: float | None = None) -> None:
        """The attempt given its turn at `sent` was refused for load (HTTP 429); `retry_after`
        is the endpoint's hint, which the attempt's own retry honours."""
        ...

    def idle(self) -> AbstractAsyncContextManager[None]:
        """Around the wait before the retry of a call refused for load: the lane may give the
        chunk's slot to another chunk's call meanwhile (the retry waits for a slot again)."""
        ...


class Unpaced:
    """A Pacer that gives every turn at once: for a generator used outside a lane."""

    async def turn(self) -> float:
        return time.monotonic()

    def pushed_back(self, sent: float, retry_after: float | None = None) -> None:
        return None

    def idle(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()


UNPACED: Pacer = Unpaced()


class QuestionGenerator(Protocol):
    """Questions a user would ask that the chunk alone answers."""

    async def generate(
        self, chunk: Chunk, count: int, pacer: Pacer = UNPACED
    ) -> GeneratedQuestions:
        """Every LLM call, each retry too, waits for a `pacer.turn()` and reports a refusal
        for load to `pacer.pushed_back` at once. Raise TransientGenerationError after retries
        are exhausted on rate limits, 5xx and timeouts; GenerationError at once on a request
        the service refuses for good."""
        ...


class Embedder(Protocol):
    @property
    def model_name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One L2-normalised vector per text, in order."""
        ...


class JobState(StrEnum):
    PENDING = "pending"
    TRAINING = "training"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    progress: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


class Trainer(Protocol):
    def submit(self, run: TrainingRun, pairs: Iterable[TrainingPair]) -> str:
        """Start a training job on the run's pairs (read lazily, by keyset, as the iterable
        is consumed); return its job id."""
        ...

    def check(self, job_id: str) -> JobStatus: ...


class ExecutionState(StrEnum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    ABORTED = "ABORTED"


@dataclass(frozen=True)
class Execution:
    name: str
    arn: str
    state: ExecutionState
    error: str | None = None
    cause: str | None = None


class Workflow(Protocol):
    def start(self, run_id: UUID, phase: Phase, attempt: int) -> Execution:
        """Start the phase's execution. Starting the same (run, phase, attempt) twice
        returns the existing execution, never a second one."""
        ...

    def stop(self, run_id: UUID, phase: Phase, attempt: int, cause: str) -> None: ...

    def describe(self, run_id: UUID, phase: Phase, attempt: int) -> Execution | None: ...
