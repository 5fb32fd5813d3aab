"""An in-memory RunStore with the port's semantics, for unit tests (fakes over mocks).

One lock guards every method, so concurrent callers see the same all-or-nothing behaviour the
database gives: one unfinished run at a time, compare-and-set transitions, idempotent batches.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from deepmem.domain.errors import (
    BlockingRunExistsError,
    IncompleteGenerationError,
    InvalidTransitionError,
    RunNotDeletableError,
    RunNotFoundError,
    SettingsLockedError,
)
from deepmem.domain.models import (
    BatchOutcome,
    BatchRecord,
    DeleteOutcome,
    Settings,
    TrainingPair,
    TrainingRun,
)
from deepmem.domain.status import (
    ACTIVE_STATUSES,
    BLOCKING_STATUSES,
    DELETABLE_STATUSES,
    RunStatus,
    can_transition,
)


class MemoryRunStore:
    """Implements `deepmem.ports.RunStore` in memory; thread-safe."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._lock = threading.RLock()
        self._runs: dict[UUID, TrainingRun] = {}
        self._pairs: dict[UUID, list[TrainingPair]] = {}
        self._processed: dict[UUID, set[str]] = {}
        self._settings = settings or Settings()
        self._pair_ids = itertools.count(1)
        # Strictly increasing timestamps keep "newest first" deterministic in fast tests.
        self._clock_base = datetime.now(UTC)
        self._ticks = itertools.count(1)

    def _now(self) -> datetime:
        return self._clock_base + timedelta(microseconds=next(self._ticks))

    def _run(self, run_id: UUID) -> TrainingRun:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFoundError(run_id) from None

    def _save(self, run: TrainingRun, **changes: Any) -> TrainingRun:
        updated = run.model_copy(update={**changes, "updated_at": self._now()})
        self._runs[run.id] = updated
        return updated

    # runs

    def create_run(
        self, dataset: str, user_id: UUID | None, run_id: UUID | None = None
    ) -> TrainingRun:
        with self._lock:
            blocking = self._find_blocking()
            if blocking is not None:
                raise BlockingRunExistsError(blocking.id, blocking.status)
            now = self._now()
            run = TrainingRun(
                id=run_id or uuid4(),
                dataset=dataset,
                status=RunStatus.GENERATING,
                user_id=user_id,
                created_at=now,
                updated_at=now,
            )
            self._runs[run.id] = run
            self._pairs[run.id] = []
            self._processed[run.id] = set()
            return run

    def get_run(self, run_id: UUID) -> TrainingRun:
        with self._lock:
            return self._run(run_id)

    def list_runs(self, limit: int = 50, offset: int = 0) -> list[TrainingRun]:
        with self._lock:
            runs = sorted(self._runs.values(), key=lambda r: r.created_at, reverse=True)
            return runs[offset : offset + limit]

    def _find_blocking(self) -> TrainingRun | None:
        blocking = [r for r in self._runs.values() if r.status in BLOCKING_STATUSES]
        return min(blocking, key=lambda r: r.created_at) if blocking else None

    def find_blocking_run(self) -> TrainingRun | None:
        with self._lock:
            return self._find_blocking()

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
        allowed = {expected} if isinstance(expected, RunStatus) else set(expected)
        with self._lock:
            run = self._run(run_id)
            # Like the SQL function: a forbidden move is an error whatever the current status.
            if any(not can_transition(status, target) for status in allowed):
                raise InvalidTransitionError(run_id, run.status, target)
            if run.status not in allowed or (attempt is not None and run.attempt != attempt):
                return None
            if target is RunStatus.GENERATED and run.processed_chunks < run.total_chunks:
                raise IncompleteGenerationError(f"training run {run_id} has unprocessed chunks")
            # Entering an active status clears the error; a failed status keeps the one given.
            error = None if target in ACTIVE_STATUSES else (error_message or run.error_message)
            return self._save(
                run,
                status=target,
                error_message=error,
                attempt=run.attempt + 1 if next_attempt else run.attempt,
            )

    def _run_in(self, run_id: UUID, status: RunStatus) -> TrainingRun:
        run = self._run(run_id)
        if run.status is not status:
            raise InvalidTransitionError(run_id, run.status, status)
        return run

    def set_total_chunks(
        self, run_id: UUID, total_chunks: int, estimate: dict[str, Any] | None = None
    ) -> TrainingRun:
        with self._lock:
            run = self._run_in(run_id, RunStatus.GENERATING)
            if estimate is None:
                return self._save(run, total_chunks=total_chunks)
            return self._save(run, total_chunks=total_chunks, estimate=dict(estimate))

    def set_training_job(self, run_id: UUID, job_id: str | None) -> TrainingRun:
        with self._lock:
            return self._save(self._run_in(run_id, RunStatus.TRAINING), deeplake_job_id=job_id)

    def set_metrics(self, run_id: UUID, metrics: dict[str, Any]) -> TrainingRun:
        with self._lock:
            return self._save(self._run(run_id), metrics=dict(metrics))

    # pairs

    def record_batch(self, batch: BatchRecord) -> BatchOutcome:
        with self._lock:
            run = self._run_in(batch.run_id, RunStatus.GENERATING)
            processed = self._processed[run.id]
            new_chunks = 0
            new_pairs = 0
            for chunk in batch.chunks:
                if chunk.chunk_id in processed:
                    continue  # a retried batch changes nothing for this chunk
                processed.add(chunk.chunk_id)
                new_chunks += 1
                # Like the unique (run, chunk, question) index: a repeated question is one pair.
                for question in dict.fromkeys(chunk.questions):
                    self._pairs[run.id].append(
                        TrainingPair(
                            id=next(self._pair_ids),
                            run_id=run.id,
                            chunk_id=chunk.chunk_id,
                            question=question,
                            created_at=self._now(),
                        )
                    )
                    new_pairs += 1
            if new_chunks:
                run = self._save(
                    run,
                    processed_chunks=run.processed_chunks + new_chunks,
                    pair_count=run.pair_count + new_pairs,
                    llm_calls=run.llm_calls + batch.llm_calls,
                    tokens_used=run.tokens_used + batch.tokens_used,
                )
            return BatchOutcome(
                new_chunks=new_chunks,
                new_pairs=new_pairs,
                run=run,
                processed=frozenset(processed & set(batch.look_up)),
            )

    def processed_chunk_ids(self, run_id: UUID, chunk_ids: Sequence[str]) -> set[str]:
        with self._lock:
            self._run(run_id)
            return self._processed[run_id] & set(chunk_ids)

    def list_pairs(self, run_id: UUID, limit: int = 100, offset: int = 0) -> list[TrainingPair]:
        with self._lock:
            return list(self._pairs.get(run_id, [])[offset : offset + limit])

    def pairs_after(self, run_id: UUID, after: int = 0, limit: int = 1000) -> list[TrainingPair]:
        with self._lock:
            pairs = self._pairs.get(run_id, [])
            start = bisect.bisect_right(pairs, after, key=lambda p: p.id)
            return list(pairs[start : start + max(0, min(limit, 10_000))])

    def delete_run(self, run_id: UUID) -> DeleteOutcome:
        with self._lock:
            run = self._run(run_id)
            if run.status not in DELETABLE_STATUSES:
                raise RunNotDeletableError(run_id, run.status, "deleted")
            deleted = len(self._pairs.pop(run_id, []))
            self._processed.pop(run_id, None)
            del self._runs[run_id]
            return DeleteOutcome(training_run_id=run_id, deleted_pairs=deleted)

    # settings

    def get_settings(self) -> Settings:
        with self._lock:
            return self._settings

    def update_settings(self, settings: Settings) -> Settings:
        with self._lock:
            active = [r for r in self._runs.values() if r.status in ACTIVE_STATUSES]
            if active:
                raise SettingsLockedError(active[0].id, active[0].status)
            self._settings = settings
            return settings
