"""RunStore on Supabase through supabase-py (the Lambdas' default): every operation is one
`rpc()` call to the SQL functions of `supabase/migrations`, through PostgREST."""

from __future__ import annotations

from typing import Any

import httpx
from postgrest.exceptions import APIError

from deepmem.adapters.store.rpc import RpcCallError, RpcRunStore, SqlFailure
from deepmem.domain.errors import StoreError
from supabase import Client, ClientOptions, SupabaseException, create_client


def connect_supabase(
    url: str,
    service_key: str,
    *,
    timeout: float = 15.0,
    connect_timeout: float = 5.0,
) -> Client:
    """A client for the service role, with timeouts short enough for a Lambda.

    We hand supabase-py our own httpx client: its `postgrest_client_timeout` option is
    deprecated and would not bound connecting separately.
    """
    http = httpx.Client(
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        follow_redirects=True,
    )
    options = ClientOptions(
        httpx_client=http,
        # A service key is not a user session: nothing to refresh or persist.
        auto_refresh_token=False,
        persist_session=False,
    )
    try:
        return create_client(url, service_key, options)
    except SupabaseException as exc:  # a bad URL or key, found before any request
        http.close()
        raise StoreError(f"cannot configure the Supabase client: {exc}") from exc


class SupabaseStore(RpcRunStore):
    def __init__(self, client: Client) -> None:
        self._client = client

    def close(self) -> None:
        self._client.postgrest.aclose()

    def _rpc(self, function: str, params: dict[str, Any]) -> Any:
        try:
            return self._client.rpc(function, params).execute().data
        except APIError as exc:
            raise RpcCallError(
                SqlFailure(
                    code=exc.code,
                    message=exc.message or "PostgREST error",
                    detail=_text(exc.details),
                    hint=_text(exc.hint),
                )
            ) from exc
        except httpx.HTTPError as exc:
            # Writes are not retried by the client (they may have committed): the caller
            # decides, so this is a plain StoreError.
            raise StoreError(f"cannot reach Supabase ({function}): {exc!r}") from exc

    def _rows(self, function: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        data = self._rpc(function, params)
        if not isinstance(data, list):
            raise StoreError(f"{function} answered {type(data).__name__}, expected rows")
        return data

    def _value(self, function: str, params: dict[str, Any]) -> Any:
        # PostgREST answers a scalar function with the bare JSON value.
        return self._rpc(function, params)

    def _scalars(self, function: str, params: dict[str, Any]) -> list[Any]:
        # `setof <scalar>` arrives as a JSON array of values.
        data = self._rpc(function, params)
        if not isinstance(data, list):
            raise StoreError(f"{function} answered {type(data).__name__}, expected a list")
        return data


def _text(value: Any) -> str | None:
    return None if value is None else value if isinstance(value, str) else str(value)
