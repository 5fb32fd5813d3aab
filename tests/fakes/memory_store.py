"""An in-memory RunStore with the port's semantics, for unit tests (fakes over mocks).

One lock guards every method, so concurrent callers see the same all-or-nothing behaviour the
database gives: one unfinished run at a time, compare-and-set transitions, idempotent batches.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
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
    StaleWorkerError,
)
from deepmem.domain.models import (
    BatchOutcome,
    BatchRecord,
    DeleteOutcome,
    Settings,
    TrainingPair,
    TrainingRun,
)
from deepmem.domain.provenance import RunSource
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
        self._rejected: dict[UUID, set[str]] = {}
        self._settings = settings or Settings()
        self._pair_ids = itertools.count(1)
        # Strictly increasing timestamps keep "newest first" deterministic in fast tests.
        self._clock_base = datetime.now(UTC)
        self._ticks = itertools.count(1)
        # run id -> (attempt, owner, expiry on the monotonic clock)
        self._leases: dict[UUID, tuple[int, str, float]] = {}

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
            self._rejected[run.id] = set()
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
            redo: dict[str, Any] = {}
            if run.status is RunStatus.GENERATING_FAILED and target is RunStatus.GENERATING:
                # Like the SQL trigger: a proceed redoes the rejected chunks, with a new budget.
                rejected = self._rejected[run.id]
                self._processed[run.id] -= rejected
                redo = {
                    "processed_chunks": run.processed_chunks - len(rejected),
                    "rejected_chunks": 0,
                    "failed_chunk_streak": 0,
                }
                self._rejected[run.id] = set()
            return self._save(
                run,
                status=target,
                error_message=error,
                attempt=run.attempt + 1 if next_attempt else run.attempt,
                **redo,
            )

    def _worker_run(self, run_id: UUID, attempt: int, *statuses: RunStatus) -> TrainingRun:
        """Like the SQL `lock_worker_run`: the run at the worker's attempt, in its phase."""
        run = self._run(run_id)
        if run.attempt != attempt or run.status not in statuses:
            raise StaleWorkerError(run_id, run.status, run.attempt, attempt)
        return run

    def set_total_chunks(
        self,
        run_id: UUID,
        total_chunks: int,
        *,
        attempt: int,
        estimate: dict[str, Any] | None = None,
    ) -> TrainingRun:
        with self._lock:
            run = self._worker_run(run_id, attempt, RunStatus.GENERATING)
            if estimate is None:
                return self._save(run, total_chunks=total_chunks)
            return self._save(run, total_chunks=total_chunks, estimate=dict(estimate))

    def set_training_job(self, run_id: UUID, job_id: str | None, *, attempt: int) -> TrainingRun:
        with self._lock:
            run = self._worker_run(run_id, attempt, RunStatus.TRAINING)
            return self._save(run, deeplake_job_id=job_id)

    def set_metrics(self, run_id: UUID, metrics: dict[str, Any], *, attempt: int) -> TrainingRun:
        with self._lock:
            run = self._worker_run(run_id, attempt, RunStatus.TRAINING)
            return self._save(run, metrics=dict(metrics))

    # pairs

    def record_batch(self, batch: BatchRecord) -> BatchOutcome:
        with self._lock:
            run = self._worker_run(
                batch.run_id, batch.attempt, RunStatus.GENERATING, RunStatus.GENERATING_FAILED
            )
            processed = self._processed[run.id]
            new_chunks = 0
            new_pairs = 0
            for chunk in batch.chunks:
                if chunk.chunk_id in processed:
                    continue  # a retried batch changes nothing for this chunk
                processed.add(chunk.chunk_id)
                new_chunks += 1
                if not chunk.questions:
                    self._rejected[run.id].add(chunk.chunk_id)
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
                    rejected_chunks=len(self._rejected[run.id]),
                    failed_chunk_streak=0,
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
                stop=run.status is not RunStatus.GENERATING,
            )

    def processed_chunk_ids(self, run_id: UUID, chunk_ids: Sequence[str]) -> set[str]:
        with self._lock:
            self._run(run_id)
            return self._processed[run_id] & set(chunk_ids)

    def record_chunk_failures(self, run_id: UUID, failed: int, attempt: int) -> int:
        with self._lock:
            run = self._worker_run(run_id, attempt, RunStatus.GENERATING)
            run = self._save(run, failed_chunk_streak=run.failed_chunk_streak + max(failed, 0))
            return run.failed_chunk_streak

    def set_run_source(self, run_id: UUID, source: RunSource, *, attempt: int) -> TrainingRun:
        with self._lock:
            run = self._worker_run(run_id, attempt, RunStatus.GENERATING)
            changes: dict[str, Any] = {}
            if run.dataset_fingerprint is None:
                changes["dataset_fingerprint"] = source.dataset_fingerprint
            if run.generator is None:
                changes["generator"] = source.generator
                changes["llm_model"] = source.llm_model
            if run.embedding_model is None:
                changes["embedding_model"] = source.embedding_model
            return self._save(run, **changes)

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
            self._leases.pop(run_id, None)
            self._rejected.pop(run_id, None)
            del self._runs[run_id]
            return DeleteOutcome(training_run_id=run_id, deleted_pairs=deleted)

    # local leases

    def renew_lease(self, run_id: UUID, attempt: int, owner: str, ttl_seconds: float) -> bool:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.attempt != attempt or run.status not in ACTIVE_STATUSES:
                return False
            now = time.monotonic()
            held = self._leases.get(run_id)
            if held is not None:
                held_attempt, held_owner, expires = held
                if held_attempt > attempt:
                    return False
                if held_attempt == attempt and held_owner != owner and expires > now:
                    return False
            self._leases[run_id] = (attempt, owner, now + max(ttl_seconds, 0.0))
            return True

    def expired_leases(self) -> list[TrainingRun]:
        with self._lock:
            now = time.monotonic()
            expired = [
                run
                for run_id, (attempt, _, expires) in self._leases.items()
                if (run := self._runs.get(run_id)) is not None
                and run.attempt == attempt
                and run.status in ACTIVE_STATUSES
                and expires <= now
            ]
            return sorted(expired, key=lambda run: run.created_at)

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
