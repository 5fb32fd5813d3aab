"""Hostile probes of `deepmem serve`'s HTTP layer, each a loopback reproduction of issue #15's
findings: bodies that lie about their length, heads and bodies that never finish, half-open
connections, oversized heads, JSON no parser can take. Every answer is JSON; nothing holds a
thread; memory stays bounded."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import psutil
import pytest
from deepmem.api.app import use_run_service
from deepmem.local.http_server import Limits
from deepmem.services.runs import RunService

from tests.api_support import (
    ADMIN_ID,
    RunningServer,
    api_event,
    call,
    load_function,
    running_server,
    trust_everyone_as,
)
from tests.fakes.memory_store import MemoryRunStore
from tests.fakes.workflow import FakeWorkflow

P = "/v1/api/deep-memory"
LIMITS = Limits(
    head_timeout=1.0,
    body_timeout=1.0,
    idle_timeout=1.0,
    max_connections=40,
    max_body_bytes=1_000_000,
    graceful_seconds=5,
)


@pytest.fixture
def store() -> MemoryRunStore:
    return MemoryRunStore()


@pytest.fixture
def server(store: MemoryRunStore) -> Iterator[RunningServer]:
    service = RunService(store, FakeWorkflow(), dataset="/data/kb")
    with running_server(trust_everyone_as(str(ADMIN_ID)), service=service, limits=LIMITS) as s:
        yield s


def connect(server: RunningServer, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer: status, headers, body (by content-length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body[:length]


def exchange(server: RunningServer, raw: bytes) -> tuple[int, dict[str, str], dict]:
    with connect(server) as sock:
        sock.sendall(raw)
        status, headers, body = read_answer(sock)
    assert headers["content-type"] == "application/json", (status, headers, body)
    return status, headers, json.loads(body)


def put_settings(body: bytes, extra: str = "") -> bytes:
    return (
        f"PUT {P}/settings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.mark.parametrize("length", ["-1", "abc", "1, 2", "+5", " "])
def test_a_content_length_that_is_not_a_number_is_400_json(server, length) -> None:
    raw = f"PUT {P}/settings HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\n\r\n{{}}".encode()

    status, headers, body = exchange(server, raw)

    assert status == 400
    assert headers["connection"] == "close"
    assert "Content-Length" in body["detail"]


def test_an_announced_body_over_the_cap_is_413_before_it_is_read(server) -> None:
    raw = f"PUT {P}/settings HTTP/1.1\r\nhost: x\r\ncontent-length: 200000000\r\n\r\n".encode()

    status, _, body = exchange(server, raw)

    assert status == 413
    assert "1000000" in body["detail"]


def test_a_chunked_body_over_the_cap_is_413_and_memory_stays_bounded(server) -> None:
    process = psutil.Process()
    before = process.memory_info().rss
    chunk = b"x" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    with connect(server) as sock:
        sock.sendall(
            f"PUT {P}/settings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            "transfer-encoding: chunked\r\n\r\n".encode()
        )
        sent = 0
        try:
            while sent < 200_000_000:  # 200 MB offered; the server stops reading past 1 MB
                sock.sendall(frame)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        status, headers, body = read_answer(sock)

    assert status == 413
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["detail"]
    assert sent < 200_000_000
    assert process.memory_info().rss - before < 50_000_000


def test_a_body_that_stops_arriving_is_408_within_the_body_deadline(server) -> None:
    with connect(server) as sock:
        sock.sendall(put_settings(b'{"lanes": 3}')[:-4])  # four bytes short, forever
        started = time.monotonic()
        status, _, body = read_answer(sock)
        waited = time.monotonic() - started

    assert status == 408
    assert "body" in json.loads(body)["detail"]
    assert waited < LIMITS.body_timeout + 5


def test_a_head_trickled_byte_by_byte_is_cut_at_the_total_deadline(server) -> None:
    head = f"GET {P}/runs HTTP/1.1\r\nhost: x\r\nx-slow: {'a' * 200}\r\n\r\n".encode()
    answers: list[int] = []
    with connect(server) as sock:
        started = time.monotonic()
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)  # each byte in time; the whole head never is
        except (BrokenPipeError, ConnectionResetError):
            pass
        answers.append(read_answer(sock)[0])
        waited = time.monotonic() - started

    assert answers == [408]
    assert waited < len(head) * 0.05  # cut before the head could finish


def test_half_open_connections_hold_no_thread_and_are_bounded(server) -> None:
    threads_before = threading.active_count()
    idle = [connect(server) for _ in range(LIMITS.max_connections)]
    for sock in idle:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n")  # a head that never ends
    try:
        time.sleep(0.2)
        over = exchange(server, b"GET /openapi.json HTTP/1.1\r\nhost: x\r\n\r\n")
        threads_during = threading.active_count()
        answers = [read_answer(sock)[0] for sock in idle]  # each one cut by the head deadline
    finally:
        for sock in idle:
            sock.close()

    assert over[0] == 503
    assert threads_during - threads_before <= LIMITS.workers
    assert answers == [408] * LIMITS.max_connections
    status, _, _ = exchange(server, f"GET {P}/nowhere HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    assert status == 404  # served again once they are gone


def test_headers_too_large_are_431_and_a_url_too_long_is_414(server) -> None:
    big_header = f"GET {P}/runs HTTP/1.1\r\nhost: x\r\nx-big: {'a' * 20_000}\r\n\r\n".encode()
    long_line = f"GET /{'a' * 20_000} HTTP/1.1\r\nhost: x\r\n\r\n".encode()
    long_url = f"GET {P}/runs?x={'a' * 9_000} HTTP/1.1\r\nhost: x\r\n\r\n".encode()

    assert exchange(server, big_header)[0] == 431
    assert exchange(server, long_line)[0] == 414
    assert exchange(server, long_url)[0] == 414


@pytest.mark.parametrize(
    "raw",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_malformed_requests_are_400_json(server, raw) -> None:
    status, _, body = exchange(server, raw)

    assert status == 400
    assert isinstance(body["detail"], str)


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 50_000 + b"]" * 50_000,
        b'{"lanes": ' + b"9" * 5_000 + b"}",
        b'{"lanes": 3',
        b'{"lanes": true}',
        b'{"lanes": "3"}',
        b'{"lanes": 3.5}',
        b'{"lanes": 1e999}',
    ],
)
def test_bodies_json_cannot_take_or_of_the_wrong_type_are_422(server, store, payload) -> None:
    status, _, body = exchange(server, put_settings(payload))

    assert status == 422, body
    assert body["detail"]
    assert store.get_settings().lanes == 2  # unchanged


def test_a_well_formed_request_on_the_same_server_still_works(server, store) -> None:
    status, _, body = exchange(server, put_settings(b'{"lanes": 3}'))

    assert status == 200
    assert body["lanes"] == 3
    assert store.get_settings().lanes == 3


@pytest.mark.parametrize(
    "raw_body",
    ["[" * 50_000 + "]" * 50_000, '{"lanes": ' + "9" * 5_000 + "}", '{"lanes": true}'],
)
def test_the_lambda_path_answers_the_same_422(store, raw_body) -> None:
    # The resolver that answers `deepmem serve` is the one API Gateway invokes in AWS.
    settings = load_function("settings")
    service = RunService(store, FakeWorkflow(), dataset="/data/kb")
    with use_run_service(service):
        answer = call(settings, api_event("PUT", f"{P}/settings", raw_body=raw_body))

    assert answer.status == 422
    assert answer.body["detail"]
    assert store.get_settings().lanes == 2


def test_a_crash_below_the_resolver_is_a_json_500_and_the_server_goes_on(store) -> None:
    def broken(event: object) -> object:
        raise RuntimeError("the authorizer itself failed")

    with running_server(broken, limits=LIMITS) as broken_server:  # type: ignore[arg-type]
        first = exchange(broken_server, f"GET {P}/runs HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        second = exchange(broken_server, b"GET /openapi.json HTTP/1.1\r\nhost: x\r\n\r\n")

    assert first[0] == 500
    assert first[2] == {"detail": "internal error"}
    assert second[0] == 200


def test_a_websocket_upgrade_is_an_ordinary_request(server) -> None:
    raw = (
        b"GET /openapi.json HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
        b"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )

    status, _, spec = exchange(server, raw)

    assert status == 200
    assert "paths" in spec
