"""The RunStore port over the SQL functions of `supabase/migrations`.

Every operation is one call of one SQL function, so the rules live in the database once and
both adapters (psycopg `select`, supabase-py `rpc()`) share this class: they only say how to
call a function and how to read an error's SQLSTATE.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from deepmem.domain.errors import (
    BlockingRunExistsError,
    DeepmemError,
    IncompleteGenerationError,
    InvalidTransitionError,
    RunNotDeletableError,
    RunNotFoundError,
    SettingsLockedError,
    StoreError,
)
from deepmem.domain.models import (
    BatchOutcome,
    BatchRecord,
    DeleteOutcome,
    Settings,
    TrainingPair,
    TrainingRun,
)
from deepmem.domain.status import RunStatus

_SETTINGS_FIELDS = tuple(Settings.model_fields)


@dataclass(frozen=True)
class SqlFailure:
    """What an adapter read off a database error."""

    code: str | None
    message: str
    detail: str | None = None
    hint: str | None = None


class RpcCallError(DeepmemError):
    """Raised by an adapter's `_call`; carries the database error."""

    def __init__(self, error: SqlFailure) -> None:
        super().__init__(error.message)
        self.error = error


class RpcRunStore(ABC):
    @abstractmethod
    def _rows(self, function: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Call a set-returning function; one dict per row."""

    @abstractmethod
    def _value(self, function: str, params: dict[str, Any]) -> Any:
        """Call a function returning one scalar (jsonb arrives decoded)."""

    @abstractmethod
    def _scalars(self, function: str, params: dict[str, Any]) -> list[Any]:
        """Call a function returning a set of scalars."""

    # -- runs ---------------------------------------------------------------------------

    def create_run(
        self, dataset: str, user_id: UUID | None, run_id: UUID | None = None
    ) -> TrainingRun:
        result = self._call_value(
            "create_training_run",
            {"p_dataset": dataset, "p_user_id": _str(user_id), "p_run_id": _str(run_id)},
        )
        if not result["created"]:
            blocking = result["blocking_run"]
            raise BlockingRunExistsError(blocking["id"], blocking["status"])
        return TrainingRun.model_validate(result["run"])

    def get_run(self, run_id: UUID) -> TrainingRun:
        rows = self._call_rows("get_training_run", {"p_run_id": str(run_id)}, run_id=run_id)
        if not rows:
            raise RunNotFoundError(run_id)
        return TrainingRun.model_validate(rows[0])

    def list_runs(self, limit: int = 50, offset: int = 0) -> list[TrainingRun]:
        rows = self._call_rows("list_training_runs", {"p_limit": limit, "p_offset": offset})
        return [TrainingRun.model_validate(row) for row in rows]

    def find_blocking_run(self) -> TrainingRun | None:
        rows = self._call_rows("blocking_training_run", {})
        return TrainingRun.model_validate(rows[0]) if rows else None

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
        statuses = [expected] if isinstance(expected, RunStatus) else list(expected)
        rows = self._call_rows(
            "transition_training_run",
            {
                "p_run_id": str(run_id),
                "p_expected": [str(s) for s in statuses],
                "p_target": str(target),
                "p_error_message": error_message,
                "p_next_attempt": next_attempt,
                "p_attempt": attempt,
            },
            run_id=run_id,
            target=target,
        )
        return TrainingRun.model_validate(rows[0]) if rows else None

    def set_total_chunks(
        self, run_id: UUID, total_chunks: int, estimate: dict[str, Any] | None = None
    ) -> TrainingRun:
        return self._one(
            "set_training_run_plan",
            {"p_run_id": str(run_id), "p_total_chunks": total_chunks, "p_estimate": estimate},
            run_id,
            RunStatus.GENERATING,
        )

    def set_training_job(self, run_id: UUID, job_id: str | None) -> TrainingRun:
        return self._one(
            "set_training_run_job",
            {"p_run_id": str(run_id), "p_job_id": job_id},
            run_id,
            RunStatus.TRAINING,
        )

    def set_metrics(self, run_id: UUID, metrics: dict[str, Any]) -> TrainingRun:
        return self._one(
            "set_training_run_metrics",
            {"p_run_id": str(run_id), "p_metrics": metrics},
            run_id,
            RunStatus.TRAINING,
        )

    # -- pairs --------------------------------------------------------------------------

    def record_batch(self, batch: BatchRecord) -> BatchOutcome:
        result = self._call_value(
            "record_training_batch",
            {
                "p_run_id": str(batch.run_id),
                "p_chunks": [chunk.model_dump() for chunk in batch.chunks],
                "p_llm_calls": batch.llm_calls,
                "p_tokens_used": batch.tokens_used,
                "p_look_up": list(batch.look_up),
            },
            run_id=batch.run_id,
            target=RunStatus.GENERATING,
        )
        return BatchOutcome(
            new_chunks=result["new_chunks"],
            new_pairs=result["new_pairs"],
            run=TrainingRun.model_validate(result["run"]),
            processed=frozenset(result.get("processed") or ()),
        )

    def processed_chunk_ids(self, run_id: UUID, chunk_ids: Sequence[str]) -> set[str]:
        if not chunk_ids:
            return set()
        return set(
            self._call_scalars(
                "processed_training_chunks",
                {"p_run_id": str(run_id), "p_chunk_ids": list(chunk_ids)},
            )
        )

    def list_pairs(self, run_id: UUID, limit: int = 100, offset: int = 0) -> list[TrainingPair]:
        rows = self._call_rows(
            "list_training_pairs",
            {"p_run_id": str(run_id), "p_limit": limit, "p_offset": offset},
        )
        return [TrainingPair.model_validate(row) for row in rows]

    def pairs_after(self, run_id: UUID, after: int = 0, limit: int = 1000) -> list[TrainingPair]:
        rows = self._call_rows(
            "list_training_pairs_after",
            {"p_run_id": str(run_id), "p_after": after, "p_limit": limit},
        )
        return [TrainingPair.model_validate(row) for row in rows]

    def delete_run(self, run_id: UUID) -> DeleteOutcome:
        result = self._call_value(
            "delete_training_run", {"p_run_id": str(run_id)}, run_id=run_id, deleting=True
        )
        return DeleteOutcome.model_validate(result)

    # -- settings -----------------------------------------------------------------------

    def get_settings(self) -> Settings:
        rows = self._call_rows("get_deep_memory_settings", {})
        if not rows:
            raise StoreError("the settings row is missing: apply the migrations")
        return Settings.model_validate({k: rows[0][k] for k in _SETTINGS_FIELDS})

    def update_settings(self, settings: Settings) -> Settings:
        rows = self._call_rows(
            "update_deep_memory_settings", {"p_settings": settings.model_dump(mode="json")}
        )
        if not rows:
            raise StoreError("the settings row is missing: apply the migrations")
        return Settings.model_validate({k: rows[0][k] for k in _SETTINGS_FIELDS})

    # -- plumbing -----------------------------------------------------------------------

    def _one(
        self, function: str, params: dict[str, Any], run_id: UUID, target: RunStatus
    ) -> TrainingRun:
        rows = self._call_rows(function, params, run_id=run_id, target=target)
        if not rows:
            raise RunNotFoundError(run_id)
        return TrainingRun.model_validate(rows[0])

    def _call_rows(
        self, function: str, params: dict[str, Any], **context: Any
    ) -> list[dict[str, Any]]:
        try:
            return self._rows(function, params)
        except RpcCallError as exc:
            raise _domain_error(exc.error, **context) from exc

    def _call_value(self, function: str, params: dict[str, Any], **context: Any) -> Any:
        try:
            return self._value(function, params)
        except RpcCallError as exc:
            raise _domain_error(exc.error, **context) from exc

    def _call_scalars(self, function: str, params: dict[str, Any], **context: Any) -> list[Any]:
        try:
            return self._scalars(function, params)
        except RpcCallError as exc:
            raise _domain_error(exc.error, **context) from exc


def _str(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def _domain_error(
    error: SqlFailure,
    *,
    run_id: UUID | None = None,
    target: RunStatus | None = None,
    deleting: bool = False,
) -> Exception:
    """Map our SQLSTATEs (see the invariants migration) to domain errors."""
    run = run_id if run_id is not None else "?"
    if error.code == "DM404":
        return RunNotFoundError(run)
    if error.code == "DM409":
        current = error.detail or "?"
        if deleting:
            return RunNotDeletableError(run, current, "deleted")
        return InvalidTransitionError(run, current, target or "?")
    if error.code == "DM412":
        return IncompleteGenerationError(error.message)
    if error.code == "DM423":
        return SettingsLockedError(error.hint or "?", error.detail or "?")
    if error.code == "22P02":  # invalid_text_representation, e.g. a malformed uuid
        return RunNotFoundError(run)
    return StoreError(f"{error.code or 'error'}: {error.message}")
