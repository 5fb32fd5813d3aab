"""The authorizer's key set: fetched within a total deadline, once for concurrent checks.

A deadline per read (what `PyJWKClient(timeout=...)` and most clients give) lets a server that
trickles one byte at a time hold a check for as long as it likes; here a timer shuts the socket
down when the deadline passes, wherever the fetch is (connect, head or body). Concurrent checks
that need the keys wait for the one fetch in flight (single flight), and never longer than the
deadline; the fetch itself runs in a thread of its own, so not even the check that started it
waits longer (name resolution, which no socket timeout bounds, included). Any failure
(unreachable, timeout, a status other than 200, a body that is not a JSON key set) is
`JwksUnavailableError`: the authorizer answers 503, not "invalid token".
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from typing import Any
from urllib.parse import urlsplit

import jwt
from jwt import PyJWK, PyJWKSet

from deepmem.domain.errors import DeepmemError

MAX_JWKS_BYTES = 256 * 1024


class JwksUnavailableError(DeepmemError):
    """The key set could not be had in time: not the caller's fault."""


def fetch_jwks(url: str, deadline: float) -> dict[str, Any]:
    """GET `url` as JSON, all of it within `deadline` seconds."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JwksUnavailableError(f"the JWKS url {url!r} is not an http(s) url")
    connection_class = HTTPSConnection if parts.scheme == "https" else HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=deadline)
    timer = threading.Timer(deadline, _abort, args=(connection,))
    timer.daemon = True
    started = time.monotonic()
    timer.start()
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", path, headers={"accept": "application/json"})
        response = connection.getresponse()
        body = response.read(MAX_JWKS_BYTES + 1)
    except (OSError, HTTPException) as exc:
        if time.monotonic() - started >= deadline:
            raise JwksUnavailableError(f"the JWKS did not answer within {deadline:g} s") from exc
        raise JwksUnavailableError(f"the JWKS could not be fetched: {exc}") from exc
    finally:
        timer.cancel()
        connection.close()
    if time.monotonic() - started >= deadline:
        raise JwksUnavailableError(f"the JWKS did not answer within {deadline:g} s")
    if response.status != 200:
        raise JwksUnavailableError(f"the JWKS answered HTTP {response.status}")
    if len(body) > MAX_JWKS_BYTES:
        raise JwksUnavailableError("the JWKS answer is too large to be a key set")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise JwksUnavailableError("the JWKS answer is not JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksUnavailableError("the JWKS answer is not a key set")
    return document


def _abort(connection: HTTPConnection) -> None:
    """The deadline passed: end whatever read or connect is blocked on the socket."""
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


Fetch = Callable[[str, float], dict[str, Any]]


class JwksCache:
    """The keys of one JWKS url, cached for `lifespan` seconds; an unknown `kid` refetches at
    most once per `refetch_interval` (key rotation, without letting tokens force a fetch each);
    a failed fetch is not retried for `failure_backoff` seconds (its error is answered)."""

    def __init__(
        self,
        url: str,
        *,
        deadline: float = 3.0,
        lifespan: float = 600.0,
        refetch_interval: float = 30.0,
        failure_backoff: float = 1.0,
        fetch: Fetch = fetch_jwks,
    ) -> None:
        self.url = url
        self.deadline = deadline
        self.lifespan = lifespan
        self.refetch_interval = refetch_interval
        self.failure_backoff = failure_backoff
        self._fetch = fetch
        self._lock = threading.Lock()
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = -float("inf")
        self._failure: tuple[float, JwksUnavailableError] | None = None
        self._in_flight: Future[dict[str, PyJWK]] | None = None
        self.fetches = 0

    def signing_key(self, kid: str) -> PyJWK:
        """The key `kid` names; jwt.InvalidKeyError when the key set does not have it."""
        keys = self._current(force=False)
        if kid not in keys and time.monotonic() - self._fetched_at >= self.refetch_interval:
            keys = self._current(force=True)
        if kid not in keys:
            raise jwt.InvalidKeyError(f"no key {kid!r} in the JWKS")
        return keys[kid]

    def _current(self, *, force: bool) -> dict[str, PyJWK]:
        with self._lock:
            now = time.monotonic()
            if not force and now - self._fetched_at < self.lifespan:
                return self._keys
            if self._failure is not None and now - self._failure[0] < self.failure_backoff:
                raise self._failure[1]
            future, leader = self._in_flight, False
            if future is None:
                future, leader = Future(), True
                self._in_flight = future
        if leader:  # in a thread of its own: even a fetch stuck in DNS holds no check
            threading.Thread(target=self._lead, args=(future,), daemon=True).start()
        try:
            return future.result(timeout=self.deadline)
        except FutureTimeoutError:
            raise JwksUnavailableError(
                f"the JWKS did not answer within {self.deadline:g} s"
            ) from None

    def _lead(self, future: Future[dict[str, PyJWK]]) -> None:
        try:
            keys = _usable_keys(self._fetch(self.url, self.deadline))
        except Exception as exc:  # whatever failed, the followers must not wait on it
            if not isinstance(exc, JwksUnavailableError):
                exc = JwksUnavailableError(f"the JWKS could not be read: {exc!r}")
            with self._lock:
                self._failure, self._in_flight = (time.monotonic(), exc), None
            future.set_exception(exc)
            return
        with self._lock:
            self._keys, self._fetched_at = keys, time.monotonic()
            self._failure, self._in_flight = None, None
            self.fetches += 1
        future.set_result(keys)


def _usable_keys(document: dict[str, Any]) -> dict[str, PyJWK]:
    try:
        key_set = PyJWKSet.from_dict(document)
    except jwt.PyJWTError as exc:
        raise JwksUnavailableError(f"the JWKS has no usable key: {exc}") from exc
    return {str(key.key_id): key for key in key_set.keys if key.key_id}


# One cache per url for the life of the process: a warm authorizer fetches keys once.
_caches: dict[str, JwksCache] = {}
_caches_lock = threading.Lock()


def jwks_cache(url: str, deadline: float) -> JwksCache:
    with _caches_lock:
        cache = _caches.get(url)
        if cache is None or cache.deadline != deadline:
            cache = _caches[url] = JwksCache(url, deadline=deadline)
        return cache
