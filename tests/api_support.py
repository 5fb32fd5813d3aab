"""Helpers for API tests: the Lambda handlers loaded from `functions/`, API Gateway v2 events,
and a loopback JWKS server with test signing keys."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from deepmem.api.auth import AuthDecision, Authorize, allow
from deepmem.local import functions as lambda_functions
from deepmem.local.api_server import LocalApi
from deepmem.local.http_server import Limits, bind_server
from deepmem.local.lambda_runtime import LocalLambdaContext, http_api_event
from deepmem.services.runs import RunService

ROOT = Path(__file__).resolve().parents[1]
ADMIN_ID = UUID("00000000-0000-4000-8000-0000000000ad")


def load_function(name: str) -> ModuleType:
    """`functions/<name>/app.py` as a module, loaded as the local workflow loads it."""
    return lambda_functions.load_function(name)


def api_event(
    method: str,
    path: str,
    body: Any = None,
    *,
    user_id: UUID | str | None = ADMIN_ID,
    raw_body: str | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API event that passed the authorizer as `user_id`."""
    data = raw_body.encode() if raw_body is not None else b""
    if body is not None:
        data = json.dumps(body).encode()
    headers = {"content-type": "application/json", "host": "api.test"}
    event = http_api_event(method, path, headers, data)
    if user_id is not None:
        event["requestContext"]["authorizer"] = {"lambda": {"user_id": str(user_id)}}
    return event


@dataclass
class Answer:
    status: int
    body: Any

    @classmethod
    def of(cls, response: dict[str, Any]) -> Answer:
        assert response["headers"]["Content-Type"] == "application/json", response
        return cls(status=response["statusCode"], body=json.loads(response["body"]))


def call(module: ModuleType, event: dict[str, Any]) -> Answer:
    return Answer.of(module.handler(event, LocalLambdaContext(function_name="deepmem-test")))


# Tokens


@dataclass
class SigningKeys:
    ec_key: ec.EllipticCurvePrivateKey
    rsa_key: rsa.RSAPrivateKey
    other_ec_key: ec.EllipticCurvePrivateKey  # not published: forged signatures

    @classmethod
    def generate(cls) -> SigningKeys:
        return cls(
            ec_key=ec.generate_private_key(ec.SECP256R1()),
            rsa_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
            other_ec_key=ec.generate_private_key(ec.SECP256R1()),
        )

    def jwks(self) -> dict[str, Any]:
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key()))
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        return {
            "keys": [
                ec_jwk | {"kid": "ec-1", "alg": "ES256", "use": "sig"},
                rsa_jwk | {"kid": "rsa-1", "alg": "RS256", "use": "sig"},
            ]
        }


def claims(
    issuer: str,
    *,
    sub: UUID | str = ADMIN_ID,
    role: str | None = "admin",
    audience: str = "authenticated",
    expires_in: int = 3600,
) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": str(sub),
        "aud": audience,
        "iss": issuer,
        "iat": now,
        "exp": now + expires_in,
        "role": "authenticated",
        "email": "someone@example.com",
        "app_metadata": {"provider": "email"} | ({"role": role} if role else {}),
    }
    return body


@contextmanager
def jwks_server(keys: SigningKeys) -> Iterator[tuple[str, list[int]]]:
    """Serve the public keys on loopback; yield the JWKS url and a hit counter."""
    document = json.dumps(keys.jwks()).encode()
    hits = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits[0] += 1
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/auth/v1/.well-known/jwks.json", hits
    finally:
        server.shutdown()
        server.server_close()


def new_id() -> UUID:
    return uuid4()


# ---------------------------------------------------------------- the local API server


@dataclass
class RunningServer:
    host: str
    port: int
    api: LocalApi

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def trust_everyone_as(user_id: str) -> Authorize:
    """Every request acts as `user_id` (tests of the server apart from the authorizer)."""
    UUID(user_id)

    def authorize(event: Mapping[str, Any]) -> AuthDecision:
        return allow(user_id)

    return authorize


@contextmanager
def running_server(
    authorize: Authorize,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    service: RunService | None = None,
    verbose: bool = False,
    allow_origins: tuple[str, ...] = ("*",),
    limits: Limits | None = None,
) -> Iterator[RunningServer]:
    """A server in a background thread for the duration of the block (port 0: any free one)."""
    with ExitStack() as stack:
        if service is not None:
            from deepmem.api.app import use_run_service

            stack.enter_context(use_run_service(service))
        limits = limits or Limits()
        server = bind_server(
            host, port, authorize, verbose=verbose, allow_origins=allow_origins, limits=limits
        )
        thread = threading.Thread(target=server.run, name="deepmem-serve", daemon=True)
        thread.start()
        try:
            assert server.ready.wait(timeout=30), "the server did not start listening"
            yield RunningServer(host, server.server_address[1], server.api)
        finally:
            server.stop()
            thread.join(timeout=limits.graceful_seconds + 5)
