"""RunStore on PostgreSQL through psycopg 3 (pooled): the embedded default, and a valid choice
against a Supabase project's own Postgres (`DATABASE_URL`)."""

from __future__ import annotations

from typing import Any, cast

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from deepmem.adapters.store.rpc import RpcCallError, RpcRunStore, SqlFailure
from deepmem.domain.errors import StoreError


def connect_pool(url: str, max_size: int = 8) -> ConnectionPool:
    try:
        return ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            open=True,
            timeout=30,
        )
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc


class PostgresStore(RpcRunStore):
    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def close(self) -> None:
        self._pool.close()

    def _execute(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        adapted = {
            k: Jsonb(v) if isinstance(v, (dict, list)) and k in _JSON_PARAMS else v
            for k, v in params.items()
        }
        try:
            with self._pool.connection() as conn:
                rows = conn.execute(sql, adapted).fetchall()
                return cast(list[dict[str, Any]], rows)
        except psycopg.Error as exc:
            diag = exc.diag
            # psycopg refuses some values itself (NUL in a text parameter): no SQLSTATE, but
            # the same class of error as the server's data_exception.
            code = exc.sqlstate or ("22000" if isinstance(exc, psycopg.DataError) else None)
            raise RpcCallError(
                SqlFailure(
                    code=code,
                    message=diag.message_primary or str(exc),
                    detail=diag.message_detail,
                    hint=diag.message_hint,
                )
            ) from exc

    @staticmethod
    def _call_sql(function: str, params: dict[str, Any]) -> str:
        args = ", ".join(f"{name} => %({name})s" for name in params)
        return f"public.{function}({args})"

    def _rows(self, function: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self._execute(f"select * from {self._call_sql(function, params)}", params)

    def _value(self, function: str, params: dict[str, Any]) -> Any:
        rows = self._execute(f"select {self._call_sql(function, params)} as value", params)
        return rows[0]["value"]

    def _scalars(self, function: str, params: dict[str, Any]) -> list[Any]:
        rows = self._execute(f"select {self._call_sql(function, params)} as value", params)
        return [row["value"] for row in rows]


_JSON_PARAMS = frozenset({"p_chunks", "p_metrics", "p_settings", "p_estimate"})
