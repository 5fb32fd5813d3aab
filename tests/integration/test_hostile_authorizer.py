"""Hostile probes of the authorizer: a JWKS on loopback that answers HTML, bad JSON or 5xx,
trickles bytes or stalls while checks queue behind it; tokens signed with the right key whose
registered claims have the wrong type. Every JWKS fault is a 503 within the deadline."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import jwt
import pytest
from deepmem.api.auth import (
    AuthConfigurationError,
    AuthSettings,
    Denial,
    TokenVerifier,
    event_authorizer,
    settings_from_config,
)
from deepmem.api.jwks import JwksCache
from deepmem.config import Config, load_config
from deepmem.services.runs import RunService

from tests.api_support import SigningKeys, claims, load_function, running_server
from tests.fakes.memory_store import MemoryRunStore
from tests.fakes.workflow import FakeWorkflow

ISSUER = "https://project.supabase.co/auth/v1"
DEADLINE = 1.0
SLACK = 1.5  # scheduling on a loaded machine; far below the 13.5 s a trickle held a check


@pytest.fixture(scope="module")
def keys() -> SigningKeys:
    return SigningKeys.generate()


def token(keys: SigningKeys, body: dict[str, Any] | None = None) -> str:
    """Signed as given: `jwt.encode` itself refuses some wrong types, a forger's code need not."""
    payload = json.dumps(claims(ISSUER) if body is None else body).encode()
    return jwt.api_jws.encode(payload, keys.ec_key, algorithm="ES256", headers={"kid": "ec-1"})


Behaviour = Callable[[BaseHTTPRequestHandler], None]


@contextmanager
def jwks_serving(behaviour: Behaviour) -> Iterator[tuple[str, list[int]]]:
    hits = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits[0] += 1
            with suppress(BrokenPipeError, ConnectionResetError):
                behaviour(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/auth/v1/.well-known/jwks.json", hits
    finally:
        server.shutdown()
        server.server_close()


def answer(status: int, body: bytes, content_type: str = "application/json") -> Behaviour:
    def behave(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("content-type", content_type)
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return behave


def trickle(handler: BaseHTTPRequestHandler) -> None:
    """A byte every 0.2 s: every read is quick, the answer never ends."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
    handler.wfile.flush()
    for _ in range(200):
        handler.wfile.write(b"x")
        handler.wfile.flush()
        time.sleep(0.2)


def stall(seconds: float, then: Behaviour) -> Behaviour:
    def behave(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        then(handler)

    return behave


def verifier_for(url: str) -> TokenVerifier:
    # A cache of its own: the process-wide one would carry keys from one probe to the next.
    cache = JwksCache(url, deadline=DEADLINE)
    return TokenVerifier(AuthSettings(jwks_url=url, issuer=ISSUER), jwks=cache)


def timed(check: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = check()
    return result, time.monotonic() - started


@pytest.mark.parametrize(
    "behaviour",
    [
        answer(200, b"<html><body>Sign in</body></html>", "text/html"),
        answer(200, b"{not json"),
        answer(200, b'{"keys": "none"}'),
        answer(200, b'{"keys": [{"kty": "nonsense"}]}'),
        answer(500, b'{"error": "boom"}'),
        answer(503, b"<html>maintenance</html>", "text/html"),
        trickle,
        stall(30, answer(200, b"{}")),
    ],
    ids=["html", "bad-json", "keys-not-a-list", "no-usable-key", "500", "503", "trickle", "stall"],
)
def test_a_jwks_fault_is_503_within_the_deadline(keys, behaviour) -> None:
    with jwks_serving(behaviour) as (url, _):
        decision, waited = timed(lambda: verifier_for(url).authorize(token(keys)))

    assert decision.denial is Denial.UNAVAILABLE, decision.reason
    assert decision.http_status == 503
    assert decision.to_simple_response() == {
        "isAuthorized": False,
        "context": {"reason": "unavailable"},
    }
    assert waited < DEADLINE + SLACK


def test_concurrent_checks_behind_a_stalled_jwks_all_end_within_the_deadline(keys) -> None:
    with jwks_serving(stall(30, answer(200, b"{}"))) as (url, hits):
        verifier = verifier_for(url)
        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(
                pool.map(lambda _: timed(lambda: verifier.authorize(token(keys))), range(6))
            )

    assert [decision.denial for decision, _ in results] == [Denial.UNAVAILABLE] * 6
    assert max(waited for _, waited in results) < DEADLINE + SLACK
    assert hits[0] == 1  # one fetch for all six: single flight


def test_concurrent_checks_share_one_slow_fetch_that_succeeds(keys) -> None:
    document = json.dumps(keys.jwks()).encode()
    with jwks_serving(stall(0.4, answer(200, document))) as (url, hits):
        verifier = verifier_for(url)
        with ThreadPoolExecutor(max_workers=6) as pool:
            decisions = list(pool.map(lambda _: verifier.authorize(token(keys)), range(6)))

    assert all(decision.allowed for decision in decisions), [d.reason for d in decisions]
    assert hits[0] == 1


def test_a_failed_fetch_is_retried_after_the_backoff_not_for_every_check(keys) -> None:
    with jwks_serving(answer(500, b"{}")) as (url, hits):
        verifier = verifier_for(url)
        for _ in range(5):
            assert verifier.authorize(token(keys)).denial is Denial.UNAVAILABLE

    assert hits[0] == 1


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", str(int(time.time()) + 3600)),
        ("exp", True),
        ("exp", [int(time.time()) + 3600]),
        ("exp", {"at": 1}),
        ("nbf", "0"),
        ("iat", "0"),
        ("iat", None),
        ("sub", 12345),
        ("sub", ["00000000-0000-4000-8000-0000000000ad"]),
        ("aud", 1),
        ("aud", ["authenticated", 2]),
        ("aud", {"authenticated": True}),
        ("iss", [ISSUER]),
    ],
)
def test_registered_claims_of_the_wrong_type_are_refused(keys, claim, value) -> None:
    body = claims(ISSUER) | {claim: value}
    with jwks_serving(answer(200, json.dumps(keys.jwks()).encode())) as (url, _):
        decision = verifier_for(url).authorize(token(keys, body))

    assert decision.denial is Denial.INVALID_TOKEN, (claim, value, decision)
    assert claim in decision.reason or "claim" in decision.reason.lower()


def test_the_right_types_still_pass(keys) -> None:
    body = claims(ISSUER) | {"aud": ["authenticated", "other"], "nbf": time.time() - 5}
    with jwks_serving(answer(200, json.dumps(keys.jwks()).encode())) as (url, _):
        assert verifier_for(url).authorize(token(keys, body)).allowed


def test_the_local_server_answers_503_json_for_an_html_jwks(keys) -> None:
    html = answer(200, b"<html>login</html>", "text/html")
    service = RunService(MemoryRunStore(), FakeWorkflow(), dataset="/data/kb")
    with (
        jwks_serving(html) as (url, _),
        running_server(event_authorizer(verifier_for(url)), service=service) as server,
    ):
        request = Request(
            f"{server.url}/v1/api/deep-memory/runs",
            headers={"authorization": f"Bearer {token(keys)}"},
        )
        with pytest.raises(HTTPError) as refused:
            urlopen(request, timeout=30)

    assert refused.value.code == 503
    assert refused.value.headers["content-type"] == "application/json"
    assert "verify" in json.loads(refused.value.read())["detail"]


def test_a_jwks_url_without_an_issuer_is_refused_at_start(monkeypatch) -> None:
    config = Config.model_validate({"SUPABASE_JWKS_URL": "https://x.supabase.co/jwks.json"})
    with pytest.raises(AuthConfigurationError, match="SUPABASE_JWT_ISSUER"):
        settings_from_config(config)

    for name in ("SUPABASE_URL", "SUPABASE_JWT_ISSUER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUPABASE_JWKS_URL", "https://x.supabase.co/jwks.json")
    load_config.cache_clear()
    try:
        with pytest.raises(AuthConfigurationError):
            load_function("authorizer")  # the Lambda fails its init, loudly
    finally:
        load_config.cache_clear()


def test_a_fetch_stuck_where_no_socket_timeout_reaches_holds_no_check(keys) -> None:
    # Name resolution blocks outside any socket timeout; the check that started it still ends.
    release = threading.Event()

    def stuck(url: str, deadline: float) -> dict[str, Any]:
        release.wait(30)
        return keys.jwks()

    cache = JwksCache("http://jwks.invalid/", deadline=DEADLINE, fetch=stuck)
    verifier = TokenVerifier(AuthSettings(jwks_url=cache.url, issuer=ISSUER), jwks=cache)
    try:
        decision, waited = timed(lambda: verifier.authorize(token(keys)))
    finally:
        release.set()

    assert decision.denial is Denial.UNAVAILABLE
    assert waited < DEADLINE + SLACK
