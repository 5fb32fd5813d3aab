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
    InvalidDataError,
    InvalidTransitionError,
    RunNotDeletableError,
    RunNotFoundError,
    SettingsLockedError,
    StaleWorkerError,
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
from deepmem.domain.provenance import RunSource
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
        self,
        run_id: UUID,
        total_chunks: int,
        *,
        attempt: int,
        estimate: dict[str, Any] | None = None,
    ) -> TrainingRun:
        return self._one(
            "set_training_run_plan",
            {
                "p_run_id": str(run_id),
                "p_total_chunks": total_chunks,
                "p_attempt": attempt,
                "p_estimate": estimate,
            },
            run_id,
            RunStatus.GENERATING,
            attempt,
        )

    def set_training_job(self, run_id: UUID, job_id: str | None, *, attempt: int) -> TrainingRun:
        return self._one(
            "set_training_run_job",
            {"p_run_id": str(run_id), "p_job_id": job_id, "p_attempt": attempt},
            run_id,
            RunStatus.TRAINING,
            attempt,
        )

    def set_metrics(self, run_id: UUID, metrics: dict[str, Any], *, attempt: int) -> TrainingRun:
        return self._one(
            "set_training_run_metrics",
            {"p_run_id": str(run_id), "p_metrics": metrics, "p_attempt": attempt},
            run_id,
            RunStatus.TRAINING,
            attempt,
        )

    # -- pairs --------------------------------------------------------------------------

    def record_batch(self, batch: BatchRecord) -> BatchOutcome:
        result = self._call_value(
            "record_training_batch",
            {
                "p_run_id": str(batch.run_id),
                "p_attempt": batch.attempt,
                "p_chunks": [chunk.model_dump() for chunk in batch.chunks],
                "p_llm_calls": batch.llm_calls,
                "p_tokens_used": batch.tokens_used,
                "p_look_up": list(batch.look_up),
            },
            run_id=batch.run_id,
            target=RunStatus.GENERATING,
            attempt=batch.attempt,
            writing_data=True,
        )
        return BatchOutcome(
            new_chunks=result["new_chunks"],
            new_pairs=result["new_pairs"],
            run=TrainingRun.model_validate(result["run"]),
            processed=frozenset(result.get("processed") or ()),
            stop=bool(result.get("stop")),
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

    def record_chunk_failures(self, run_id: UUID, failed: int, attempt: int) -> int:
        return int(
            self._call_value(
                "record_training_chunk_failures",
                {"p_run_id": str(run_id), "p_failed": failed, "p_attempt": attempt},
                run_id=run_id,
                target=RunStatus.GENERATING,
                attempt=attempt,
            )
        )

    def set_run_source(self, run_id: UUID, source: RunSource, *, attempt: int) -> TrainingRun:
        fields = {f"p_{k}": v for k, v in source.model_dump().items()}
        return self._one(
            "set_training_run_source",
            {"p_run_id": str(run_id), **fields, "p_attempt": attempt},
            run_id,
            RunStatus.GENERATING,
            attempt,
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

    # -- local leases -------------------------------------------------------------------

    def renew_lease(self, run_id: UUID, attempt: int, owner: str, ttl_seconds: float) -> bool:
        return bool(
            self._call_value(
                "renew_training_run_lease",
                {
                    "p_run_id": str(run_id),
                    "p_attempt": attempt,
                    "p_owner": owner,
                    "p_ttl_seconds": ttl_seconds,
                },
                run_id=run_id,
            )
        )

    def expired_leases(self) -> list[TrainingRun]:
        rows = self._call_rows("expired_training_run_leases", {})
        return [TrainingRun.model_validate(row) for row in rows]

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
        self,
        function: str,
        params: dict[str, Any],
        run_id: UUID,
        target: RunStatus,
        attempt: int | None = None,
    ) -> TrainingRun:
        rows = self._call_rows(function, params, run_id=run_id, target=target, attempt=attempt)
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
    attempt: int | None = None,
    writing_data: bool = False,
) -> Exception:
    """Map our SQLSTATEs (see the invariants and rules migrations) to domain errors."""
    run = run_id if run_id is not None else "?"
    if error.code == "DM404":
        return RunNotFoundError(run)
    if error.code == "DM410":
        return StaleWorkerError(run, error.detail or "?", error.hint or "?", attempt or 0)
    if error.code == "DM419":
        return BlockingRunExistsError(error.hint or "?", error.detail or "?")
    if error.code == "DM409":
        current = error.detail or "?"
        if deleting:
            return RunNotDeletableError(run, current, "deleted")
        return InvalidTransitionError(run, current, target or "?")
    if error.code == "DM412":
        return IncompleteGenerationError(error.message)
    if error.code == "DM423":
        return SettingsLockedError(error.hint or "?", error.detail or "?")
    if error.code == "22P02" and not writing_data:  # e.g. a malformed run id
        return RunNotFoundError(run)
    if error.code is not None and error.code.startswith("22"):
        # data_exception: the value itself is refused; sending it again cannot help.
        return InvalidDataError(f"the store refused a value ({error.code}): {error.message}")
    return StoreError(f"{error.code or 'error'}: {error.message}")
