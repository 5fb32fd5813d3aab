"""`deepmem serve`'s socket layer: `LocalApi` (socket-free, `deepmem.local.api_server`) behind
uvicorn.

Why uvicorn: a well-kept ASGI server whose pure-Python HTTP/1.1 parser (h11) is already in the
lock through httpx, so the only new package is uvicorn itself; it shuts down gracefully on
SIGTERM (stops accepting, lets in-flight requests finish), takes an already bound socket (a taken
port is our error before anything starts) and keeps connections as asyncio protocols, not
threads. What it lacks is added here, at its documented extension points (a protocol class and an
ASGI app), each bound in `Limits`:
- a total deadline for the request head (a client trickling header bytes, or a half-open
  connection, is answered 408 and closed) and another for the body;
- a cap on the body, announced (`Content-Length`) or chunked (413, counted as it arrives; reading
  pauses while the handler is busy, so memory stays bounded);
- a cap on open connections (503 beyond it) and a fixed pool of threads for `LocalApi.handle`;
- JSON for every status the server sends itself: 400, 408, 413, 414, 431, 500, 503.
"""

from __future__ import annotations

import asyncio
import errno
import json
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from deepmem.api.auth import Authorize
from deepmem.domain.errors import DeepmemError
from deepmem.local.api_server import LocalApi


@dataclass(frozen=True)
class Limits:
    """What one client may hold. Seconds are totals, never per read."""

    head_timeout: float = 10.0  # from the connection (or the previous answer) to a full head
    body_timeout: float = 30.0
    idle_timeout: float = 5.0  # keep-alive between requests
    max_head_bytes: int = 16 * 1024  # request line + headers (431; 414 for the line alone)
    max_target_bytes: int = 8 * 1024  # the URL (414)
    max_body_bytes: int = 1_000_000  # 413
    max_connections: int = 256  # 503 beyond
    workers: int = 4  # threads running LocalApi.handle (the resolver itself runs one at a time)
    graceful_seconds: float = 30.0  # in-flight requests may finish this long after SIGTERM


class PortInUseError(DeepmemError):
    """The port is taken by another process."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            f"port {port} on {host} is already in use: stop the other server or pick another "
            "port (--port)"
        )
        self.host = host
        self.port = port


def json_answer(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection: for what the server refuses itself."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Config(uvicorn.Config):
    def __init__(self, app: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits


class _GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the request head, a connection cap and JSON
    refusals."""

    _head_timer: asyncio.TimerHandle | None = None

    @property
    def limits(self) -> Limits:
        return cast(_Config, self.config).limits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "too many open connections: try again later")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()  # the head is complete: the body has its own deadline

    def handle_events(self) -> None:
        try:
            super().handle_events()
        except UnicodeDecodeError:  # uvicorn decodes the target as ASCII; h11 lets bytes through
            self._refuse(400, "the request target is not ASCII")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # the next request's head has the same deadline

    def send_400_response(self, msg: str) -> None:
        buffered, _ = self.conn.trailing_data
        if len(buffered) > self.limits.max_head_bytes:
            if b"\n" not in buffered:
                self._refuse(414, "the request line is too long")
            else:
                self._refuse(431, "the request headers are too large")
            return
        self._refuse(400, "malformed HTTP request (request line, header or Content-Length)")

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._refuse(408, "the request head did not arrive in time")

    def _refuse(self, status: int, detail: str) -> None:
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self.transport.write(json_answer(status, detail))
            self.transport.close()


class _AsgiApp:
    """Reads the body under the cap and the deadline, then runs `LocalApi.handle` in the pool."""

    def __init__(self, api: LocalApi, limits: Limits, pool: ThreadPoolExecutor) -> None:
        self.api = api
        self.limits = limits
        self.pool = pool
        self.errors = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            answer = await self._answer(scope, receive)
        except Exception:  # never uvicorn's text/plain 500
            self.errors += 1
            answer = 500, {"content-type": "application/json"}, b'{"detail": "internal error"}'
        if answer is None:  # the client went away
            return
        status, headers, payload = answer
        headers = {k: v for k, v in headers.items() if k != "content-length"}
        headers["content-length"] = str(len(payload))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _answer(self, scope: Any, receive: Any) -> tuple[int, dict[str, str], bytes] | None:
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        if len(target) > self.limits.max_target_bytes:
            return _refusal(414, "the URL is too long")
        # h11 bounds only a head still arriving; one that came whole is measured here.
        if sum(len(n) + len(v) + 4 for n, v in scope["headers"]) > self.limits.max_head_bytes:
            return _refusal(431, "the request headers are too large")
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        if int(headers.get("content-length") or 0) > self.limits.max_body_bytes:
            return _refusal(413, f"the body is over {self.limits.max_body_bytes} bytes")
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                body = await self._body(receive)
        except TimeoutError:
            return _refusal(408, "the request body did not arrive in time")
        if body is None:
            return None
        if len(body) > self.limits.max_body_bytes:
            return _refusal(413, f"the body is over {self.limits.max_body_bytes} bytes")
        loop = asyncio.get_running_loop()
        # The resolver maps every error; __call__ is the last line of defence.
        return await loop.run_in_executor(
            self.pool, self.api.handle, scope["method"], target, headers, body
        )

    async def _body(self, receive: Any) -> bytes | None:
        """The body, or None when the client left; stops reading one byte past the cap."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self.limits.max_body_bytes or not message.get("more_body", False):
                return b"".join(chunks)


def _refusal(status: int, detail: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"detail": detail}).encode()
    return status, {"content-type": "application/json", "connection": "close"}, body


def bind_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound (not yet listening): a taken port fails here, at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(host, port) from exc
        raise
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # listening: the URL may be given out now
            self._on_ready()


class ApiServer:
    """`LocalApi` on a bound socket. `run()` serves until `stop()`, SIGTERM or SIGINT, lets
    in-flight requests finish, and returns."""

    def __init__(
        self, sock: socket.socket, api: LocalApi, limits: Limits = Limits(), verbose: bool = False
    ) -> None:
        self.socket = sock
        self.api = api
        self.limits = limits
        self.pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="deepmem-api")
        self.app = _AsgiApp(api, limits, self.pool)
        config = _Config(
            self.app,
            limits,
            http=_GuardedProtocol,
            lifespan="off",
            ws="none",  # `websockets` is installed (Supabase's realtime): no upgrades here
            loop="asyncio",
            log_config=None,
            access_log=verbose,
            timeout_keep_alive=max(1, round(limits.idle_timeout)),
            timeout_graceful_shutdown=max(1, round(limits.graceful_seconds)),
            h11_max_incomplete_event_size=limits.max_head_bytes,
            server_header=False,
        )
        host, port = sock.getsockname()[:2]
        self.server_address: tuple[str, int] = (str(host), int(port))
        self.ready = threading.Event()
        self._announce: Callable[[str], None] | None = None
        self._server = _Server(config, self._listening)

    def _listening(self) -> None:
        self.ready.set()
        if self._announce is not None:
            self._announce(self.url)

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def run(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until stopped; `on_ready(url)` once the socket accepts connections."""
        self._announce = on_ready
        try:
            with _signals_end_the_server():
                self._server.run(sockets=[self.socket])
        finally:
            self.pool.shutdown(wait=True)
            self.socket.close()

    def stop(self) -> None:
        self._server.should_exit = True

    # The names of http.server's servers, which the tests and the CLI used first.
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self.run()

    def shutdown(self) -> None:
        self.stop()

    def server_close(self) -> None:
        self.socket.close()


@contextmanager
def _signals_end_the_server() -> Iterator[None]:
    """uvicorn handles SIGTERM/SIGINT while it runs, then raises the signal again under the
    handlers it found. Handlers that ignore it, restored afterwards, make a stop by signal a
    normal return: the caller's single shutdown path (`Runtime.__exit__`) runs, exit 0."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def bind_server(
    host: str,
    port: int,
    authorize: Authorize,
    *,
    verbose: bool = False,
    allow_origins: tuple[str, ...] = ("*",),
    limits: Limits = Limits(),
) -> ApiServer:
    api = LocalApi(authorize, allow_origins=allow_origins)
    return ApiServer(bind_socket(host, port), api, limits, verbose)
