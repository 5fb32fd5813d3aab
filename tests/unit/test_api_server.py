"""`deepmem serve`'s server: HTTP → API Gateway v2 event → authorizer → resolver."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen
from uuid import UUID

import jwt
import pytest
from deepmem.api.auth import AuthSettings, TokenVerifier, event_authorizer
from deepmem.domain.status import RunStatus
from deepmem.local.http_server import PortInUseError
from deepmem.services.runs import RunService

from tests.api_support import (
    ADMIN_ID,
    RunningServer,
    SigningKeys,
    claims,
    jwks_server,
    running_server,
    trust_everyone_as,
)
from tests.fakes.memory_store import MemoryRunStore
from tests.fakes.workflow import FakeWorkflow

P = "/v1/api/deep-memory"
ISSUER = "https://project.supabase.co/auth/v1"


def request(
    server: RunningServer, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Message, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urlopen(req, timeout=30) as response:
            return response.status, response.headers, json.loads(response.read())
    except HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


@pytest.fixture
def store() -> MemoryRunStore:
    return MemoryRunStore()


@pytest.fixture
def workflow() -> FakeWorkflow:
    return FakeWorkflow()


@pytest.fixture
def service(store: MemoryRunStore, workflow: FakeWorkflow) -> RunService:
    return RunService(store, workflow, dataset="/data/kb")


@pytest.fixture(scope="module")
def keys() -> SigningKeys:
    return SigningKeys.generate()


@pytest.fixture
def verified_server(keys: SigningKeys, service: RunService) -> Iterator[RunningServer]:
    with jwks_server(keys) as (url, _):
        verifier = TokenVerifier(AuthSettings(jwks_url=url, issuer=ISSUER))
        with running_server(event_authorizer(verifier), service=service) as server:
            yield server


@pytest.fixture
def open_server(service: RunService) -> Iterator[RunningServer]:
    with running_server(trust_everyone_as(str(ADMIN_ID)), service=service) as server:
        yield server


def token(keys: SigningKeys, **overrides: Any) -> str:
    return jwt.encode(
        claims(ISSUER, **overrides), keys.ec_key, algorithm="ES256", headers={"kid": "ec-1"}
    )


def test_an_admin_token_reaches_the_handlers(verified_server, keys, store) -> None:
    status, _, body = request(verified_server, "POST", f"{P}/generate", token=token(keys))

    assert status == 202
    assert store.get_run(UUID(body["training_run_id"])).user_id == ADMIN_ID


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda k: None, 401),
        (lambda k: "garbage", 401),
        (lambda k: token(k, expires_in=-10), 401),
        (lambda k: token(k, audience="anon"), 401),
        (lambda k: token(k, role=None), 403),
    ],
)
def test_denials_are_told_apart_locally(verified_server, keys, store, make, status) -> None:
    code, headers, body = request(verified_server, "POST", f"{P}/generate", token=make(keys))

    assert code == status
    assert headers["Content-Type"] == "application/json"
    assert isinstance(body["detail"], str)
    if status == 401:
        assert headers["WWW-Authenticate"] == "Bearer"
    assert store.list_runs() == []


def test_the_spec_is_served_without_a_token(verified_server) -> None:
    status, _, spec = request(verified_server, "GET", "/openapi.json")

    assert status == 200
    assert f"{P}/generate" in spec["paths"]


def test_a_browser_dashboard_may_call_it(verified_server, keys) -> None:
    preflight = Request(
        verified_server.url + f"{P}/generate",
        method="OPTIONS",
        headers={"origin": "http://localhost:3000", "access-control-request-method": "POST"},
    )
    with urlopen(preflight, timeout=10) as answer:
        assert answer.status == 204
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "authorization" in answer.headers["access-control-allow-headers"]

    req = Request(
        verified_server.url + f"{P}/runs",
        headers={"origin": "http://localhost:3000", "authorization": f"Bearer {token(keys)}"},
    )
    with urlopen(req, timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["access-control-allow-origin"] == "*"


def test_every_error_is_json(open_server) -> None:
    for method, path, body in [
        ("GET", "/nowhere", None),
        ("GET", f"{P}/runs/not-a-uuid", None),
        ("POST", f"{P}/train", {"training_run_id": "x"}),
        ("PUT", f"{P}/settings", {"batch_size": -1}),
        ("PATCH", f"{P}/settings", {}),
        ("DELETE", f"{P}/runs/00000000-0000-4000-8000-000000000000", None),
    ]:
        status, headers, answer = request(open_server, method, path, body)
        assert 400 <= status < 500, (method, path, status)
        assert headers["Content-Type"] == "application/json"
        assert "detail" in answer


def test_a_port_in_use_is_a_clear_error(service) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with (
            pytest.raises(PortInUseError, match=f"port {port}"),
            running_server(trust_everyone_as(str(ADMIN_ID)), port=port, service=service),
        ):
            pass


# Concurrency: double clicks and client retries never start two executions.


def test_32_parallel_generates_start_exactly_one_run(open_server, store, workflow) -> None:
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(lambda _: request(open_server, "POST", f"{P}/generate"), range(32)))

    accepted = [body for status, _, body in answers if status == 202]
    refused = [body for status, _, body in answers if status == 409]
    assert len(accepted) == 1
    assert len(refused) == 31
    run_id = accepted[0]["training_run_id"]
    assert {body["blocking_run_id"] for body in refused} == {run_id}
    assert len(store.list_runs()) == 1
    assert workflow.started == [f"{run_id}-generating-1"]


def test_32_parallel_proceeds_start_exactly_one_execution(open_server, store, workflow) -> None:
    _, _, body = request(open_server, "POST", f"{P}/generate")
    run_id = UUID(body["training_run_id"])
    store.transition(run_id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED, error_message="x")

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(
            pool.map(
                lambda _: request(
                    open_server, "POST", f"{P}/proceed", {"training_run_id": str(run_id)}
                ),
                range(32),
            )
        )

    assert sorted(status for status, _, _ in answers) == [202] + [409] * 31
    assert workflow.started == [f"{run_id}-generating-1", f"{run_id}-generating-2"]
    assert store.get_run(run_id).attempt == 2
