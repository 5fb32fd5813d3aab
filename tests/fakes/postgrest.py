"""A loopback stand-in for Supabase's REST endpoint, only `POST /rest/v1/rpc/<function>`.

PostgREST has no package here, so this answers an RPC the way PostgREST does: the JWT from
`Authorization` (HS256, a test secret) picks the role; in one transaction it runs
`set local role <role>` and sets `request.jwt.claims` transaction-locally, then calls
`public.<function>` with the JSON body as named arguments, typed by the function's declared
argument types (PostgREST's `json_to_record` trick). Set-returning functions answer a JSON
array, the others the bare value; database errors answer PostgREST's error shape and status.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import jwt
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

TEST_JWT_SECRET = "deepmem-test-jwt-secret-at-least-32-bytes-long"
_RPC_PATH = re.compile(r"^/rest/v1/rpc/([A-Za-z_][A-Za-z0-9_]*)$")


def make_token(
    role: str,
    *,
    secret: str = TEST_JWT_SECRET,
    sub: str | None = None,
    app_metadata: dict[str, Any] | None = None,
    ttl_seconds: int = 3600,
) -> str:
    """A Supabase-style access token (or a service/anon key when `role` says so)."""
    claims: dict[str, Any] = {
        "role": role,
        "iss": "supabase-test",
        "exp": int(time.time()) + ttl_seconds,
    }
    if sub is not None:
        claims["sub"] = sub
    if app_metadata is not None:
        claims["app_metadata"] = app_metadata
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class _Function:
    returns_set: bool
    args: list[tuple[str, str]]  # (name, declared type) of the input arguments
    required: int  # how many leading arguments have no default


@dataclass
class _Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def _error(
    status: int, code: str | None, message: str, details: Any = None, hint: Any = None
) -> _Reply:
    return _Reply(status, {"code": code, "message": message, "details": details, "hint": hint})


# PostgREST's SQLSTATE -> HTTP status table (docs: "Errors", "HTTP Status Codes").
_EXACT_STATUS = {
    "23503": 409,
    "23505": 409,
    "25006": 405,
    "42883": 404,
    "42P01": 404,
    "P0001": 400,
}
_CLASS_STATUS = {
    "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500,
    "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500,
    "F0": 500, "HV": 500, "P0": 500, "XX": 500,
}  # fmt: skip


def _status_for(code: str | None, role: str) -> int:
    if code is None:
        return 500
    if code == "42501":  # insufficient privilege: "log in" for anon, "forbidden" otherwise
        return 401 if role == "anon" else 403
    if code in _EXACT_STATUS:
        return _EXACT_STATUS[code]
    if code.startswith("PT") and code[2:].isdigit():
        return int(code[2:])
    return _CLASS_STATUS.get(code[:2], 400)


class FakePostgrest:
    """Start with `with FakePostgrest(database_url) as api: api.url ...`."""

    def __init__(self, database_url: str, *, jwt_secret: str = TEST_JWT_SECRET) -> None:
        self._secret = jwt_secret
        self._pool = ConnectionPool(
            database_url, min_size=1, max_size=8, kwargs={"autocommit": True}, open=False
        )
        self._functions: dict[str, list[_Function]] = {}
        self.requests: list[RecordedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakePostgrest:
        self._pool.open(wait=True, timeout=10)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._pool.close()

    def __enter__(self) -> FakePostgrest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one request ----------------------------------------------------------------------

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> _Reply:
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        self.requests.append(RecordedRequest("POST", path, headers, body))
        match = _RPC_PATH.match(path)
        if match is None:
            return _error(404, "PGRST125", f"Invalid path specified in request URL: {path}")
        # The API gateway in front of PostgREST refuses requests without a key.
        if not headers.get("apikey"):
            return _Reply(401, {"message": "No API key found in request"})
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        try:
            claims = jwt.decode(token or headers["apikey"], self._secret, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            return _error(401, "PGRST301", str(exc))
        if not isinstance(body, dict):
            return _error(400, "PGRST102", "Empty or invalid json")
        role = str(claims.get("role") or "anon")
        function = self._resolve(match.group(1), set(body))
        if function is None:
            keys = ", ".join(sorted(body))
            return _error(
                404,
                "PGRST202",
                f"Could not find the function public.{match.group(1)}({keys}) in the schema cache",
            )
        return self._call(match.group(1), function, body, role=role, claims=claims, path=path)

    def _resolve(self, name: str, given: set[str]) -> _Function | None:
        """The overload whose input names cover the body and whose required ones it gives."""
        if name not in self._functions:
            self._functions[name] = self._load(name)
        for function in self._functions[name]:
            names = [n for n, _ in function.args]
            if given <= set(names) and set(names[: function.required]) <= given:
                return function
        return None

    def _load(self, name: str) -> list[_Function]:
        query = """
            select p.proretset, p.pronargs, p.pronargdefaults,
                   coalesce(p.proargnames, '{}') as names, coalesce(p.proargmodes, '{}') as modes,
                   array(select format_type(t, null) from unnest(p.proargtypes) t) as types
              from pg_proc p
             where p.pronamespace = 'public'::regnamespace and p.proname = %s
        """
        with self._pool.connection() as conn:
            rows = conn.execute(query, (name,)).fetchall()
        found = []
        for retset, nargs, ndefaults, names, modes, types in rows:
            # proargnames also lists OUT/TABLE columns; proargtypes only the inputs.
            inputs = [n for i, n in enumerate(names) if not modes or modes[i] in ("i", "b", "v")]
            found.append(
                _Function(retset, list(zip(inputs, types, strict=True)), nargs - ndefaults)
            )
        return found

    def _call(
        self,
        name: str,
        function: _Function,
        body: dict[str, Any],
        *,
        role: str,
        claims: dict[str, Any],
        path: str,
    ) -> _Reply:
        given = [(n, t) for n, t in function.args if n in body]
        call = sql.SQL("public.{}({})").format(
            sql.Identifier(name),
            sql.SQL(", ").join(
                sql.SQL("{} => _args.{}").format(sql.Identifier(n), sql.Identifier(n))
                for n, _ in given
            ),
        )
        # Declared types come from pg_catalog (format_type), never from the request.
        source = (
            sql.SQL("json_to_record(%(body)s::json) as _args({})").format(
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in given
                )
            )
            if given
            else sql.SQL("(select 1) as _args")
        )
        if function.returns_set:
            query = sql.SQL(
                "select coalesce(json_agg(_row), '[]'::json) from {}, lateral {} as _row"
            ).format(source, call)
        else:
            query = sql.SQL("select to_json({}) from {}").format(call, source)
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
                conn.execute(
                    "select set_config('request.jwt.claims', %s, true),"
                    " set_config('request.method', 'POST', true),"
                    " set_config('request.path', %s, true)",
                    (json.dumps(claims), path),
                )
                row = conn.execute(query, {"body": json.dumps(body)}).fetchone()
        except psycopg.Error as exc:
            diag = exc.diag
            return _error(
                _status_for(exc.sqlstate, role),
                exc.sqlstate,
                diag.message_primary or str(exc),
                diag.message_detail,
                diag.message_hint,
            )
        return _Reply(200, cast(tuple[Any], row)[0])

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are two writes: without this, Nagle + delayed ACK add ~40 ms.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    reply = api.handle(self.path, headers, raw)
                except Exception as exc:  # a bug here must show as a 500, not a hang
                    reply = _error(500, None, repr(exc))
                payload = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
