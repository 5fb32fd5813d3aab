"""The authorizer against tokens signed by test keys served from a loopback JWKS."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any
from uuid import uuid4

import jwt
import pytest
from deepmem.api.auth import (
    AuthSettings,
    Denial,
    TokenVerifier,
    bearer_token,
    settings_from_config,
)
from deepmem.config import Config
from deepmem.local.lambda_runtime import LocalLambdaContext

from tests.api_support import (
    ADMIN_ID,
    SigningKeys,
    claims,
    jwks_server,
    load_function,
)

ISSUER = "https://project.supabase.co/auth/v1"
HS_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"


@pytest.fixture(scope="module")
def keys() -> SigningKeys:
    return SigningKeys.generate()


@pytest.fixture(scope="module")
def jwks(keys: SigningKeys) -> Iterator[tuple[str, list[int]]]:
    with jwks_server(keys) as served:
        yield served


@pytest.fixture
def verifier(jwks: tuple[str, list[int]]) -> TokenVerifier:
    return TokenVerifier(AuthSettings(jwks_url=jwks[0], issuer=ISSUER))


def es256(keys: SigningKeys, body: dict[str, Any], kid: str = "ec-1") -> str:
    return jwt.encode(body, keys.ec_key, algorithm="ES256", headers={"kid": kid})


def rs256(keys: SigningKeys, body: dict[str, Any]) -> str:
    return jwt.encode(body, keys.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})


def unsigned(body: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(body)}."


def test_an_admin_with_an_es256_token_is_allowed(verifier, keys) -> None:
    decision = verifier.authorize(es256(keys, claims(ISSUER)))

    assert decision.allowed
    assert decision.user_id == str(ADMIN_ID)
    assert decision.to_simple_response() == {
        "isAuthorized": True,
        "context": {"user_id": str(ADMIN_ID)},
    }


def test_an_admin_with_an_rs256_token_is_allowed(verifier, keys) -> None:
    assert verifier.authorize(rs256(keys, claims(ISSUER))).allowed


def test_a_configured_admin_id_is_allowed_without_the_claim(jwks, keys) -> None:
    user = uuid4()
    verifier = TokenVerifier(
        AuthSettings(jwks_url=jwks[0], issuer=ISSUER, admin_ids=frozenset({str(user)}))
    )

    assert verifier.authorize(es256(keys, claims(ISSUER, sub=user, role=None))).allowed
    other = verifier.authorize(es256(keys, claims(ISSUER, sub=uuid4(), role=None)))
    assert other.denial is Denial.NOT_ADMIN


def test_a_user_who_is_not_admin_is_403(verifier, keys) -> None:
    decision = verifier.authorize(es256(keys, claims(ISSUER, role=None)))

    assert decision.denial is Denial.NOT_ADMIN
    assert decision.http_status == 403
    assert decision.to_simple_response() == {
        "isAuthorized": False,
        "context": {"reason": "not_admin"},
    }


def test_a_role_claim_outside_app_metadata_does_not_make_an_admin(verifier, keys) -> None:
    # `user_metadata` is writable by the user; only `app_metadata` counts.
    body = claims(ISSUER, role=None) | {"user_metadata": {"role": "admin"}}
    assert verifier.authorize(es256(keys, body)).denial is Denial.NOT_ADMIN


@pytest.mark.parametrize(
    ("case", "make"),
    [
        ("expired", lambda k: es256(k, claims(ISSUER, expires_in=-60))),
        ("wrong aud", lambda k: es256(k, claims(ISSUER, audience="anon"))),
        ("wrong iss", lambda k: es256(k, claims("https://evil.supabase.co/auth/v1"))),
        (
            "forged signature",
            lambda k: jwt.encode(
                claims(ISSUER), k.other_ec_key, algorithm="ES256", headers={"kid": "ec-1"}
            ),
        ),
        ("unknown kid", lambda k: es256(k, claims(ISSUER), kid="nope")),
        ("alg none", lambda k: unsigned(claims(ISSUER))),
        ("hs256 not configured", lambda k: jwt.encode(claims(ISSUER), HS_SECRET, "HS256")),
        (
            "no exp",
            lambda k: es256(k, {key: v for key, v in claims(ISSUER).items() if key != "exp"}),
        ),
        ("sub not a user id", lambda k: es256(k, claims(ISSUER, sub="service"))),
        ("garbage", lambda k: "not.a.token"),
        ("empty", lambda k: ""),
        (
            "rs256 header on the ec key",
            lambda k: jwt.encode(
                claims(ISSUER), k.rsa_key, algorithm="RS256", headers={"kid": "ec-1"}
            ),
        ),
    ],
)
def test_invalid_tokens_are_401(verifier, keys, case, make) -> None:
    decision = verifier.authorize(make(keys))

    assert decision.denial is Denial.INVALID_TOKEN, case
    assert decision.http_status == 401
    assert decision.to_simple_response()["isAuthorized"] is False


def test_hs256_is_accepted_only_when_configured(jwks, keys) -> None:
    verifier = TokenVerifier(AuthSettings(jwks_url=jwks[0], issuer=ISSUER, hs256_secret=HS_SECRET))

    assert verifier.authorize(jwt.encode(claims(ISSUER), HS_SECRET, "HS256")).allowed
    wrong = jwt.encode(claims(ISSUER), "another-secret-of-at-least-32-characters!!", "HS256")
    assert verifier.authorize(wrong).denial is Denial.INVALID_TOKEN
    assert verifier.authorize(es256(keys, claims(ISSUER))).allowed  # JWKS still works


def test_the_key_set_is_fetched_once_and_reused(jwks, keys) -> None:
    verifier = TokenVerifier(AuthSettings(jwks_url=jwks[0], issuer=ISSUER))
    before = jwks[1][0]

    for _ in range(5):
        assert verifier.authorize(es256(keys, claims(ISSUER))).allowed

    assert jwks[1][0] - before <= 1


def test_an_unreachable_jwks_is_unavailable_not_the_callers_fault(keys) -> None:
    verifier = TokenVerifier(AuthSettings(jwks_url="http://127.0.0.1:9/jwks.json", issuer=ISSUER))

    decision = verifier.authorize(es256(keys, claims(ISSUER)))

    assert decision.denial is Denial.UNAVAILABLE
    assert decision.http_status == 503


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ({"authorization": "Bearer abc"}, "abc"),
        ({"Authorization": "bearer  abc "}, "abc"),
        ({"authorization": "Basic abc"}, None),
        ({"authorization": "Bearer"}, None),
        ({}, None),
    ],
)
def test_bearer_token(headers, token) -> None:
    assert bearer_token({"headers": headers}) == token


def test_settings_from_config_derive_from_the_supabase_url() -> None:
    config = Config.model_validate(
        {
            "SUPABASE_URL": "https://abc.supabase.co/",
            "DEEPMEM_ADMIN_USER_IDS": f" {ADMIN_ID}, ,x ",
            "SUPABASE_JWT_SECRET_NAME": "deepmem/jwt",
        }
    )

    settings = settings_from_config(config, load_secret=lambda name: f"secret-of-{name}")

    assert settings.jwks_url == "https://abc.supabase.co/auth/v1/.well-known/jwks.json"
    assert settings.issuer == "https://abc.supabase.co/auth/v1"
    assert settings.audience == "authenticated"
    assert settings.admin_ids == frozenset({str(ADMIN_ID), "x"})
    assert settings.hs256_secret == "secret-of-deepmem/jwt"


# The Lambda function


@pytest.fixture
def authorizer(jwks, monkeypatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.co")
    monkeypatch.setenv("SUPABASE_JWKS_URL", jwks[0])
    from deepmem.config import load_config

    load_config.cache_clear()
    module = load_function("authorizer")
    yield module
    load_config.cache_clear()


def authorizer_event(token: str | None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return {
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": "arn:aws:execute-api:us-east-1:000000000000:api/$default/POST/v1/x",
        "identitySource": [headers["authorization"]] if token else [],
        "routeKey": "POST /v1/api/deep-memory/generate",
        "rawPath": "/v1/api/deep-memory/generate",
        "headers": headers,
        "requestContext": {"http": {"method": "POST"}},
    }


def test_the_authorizer_function_admits_admins_and_passes_the_user_id(authorizer, keys) -> None:
    allowed = authorizer.handler(
        authorizer_event(es256(keys, claims(ISSUER))), LocalLambdaContext()
    )
    denied = authorizer.handler(
        authorizer_event(es256(keys, claims(ISSUER, role=None))), LocalLambdaContext()
    )
    invalid = authorizer.handler(authorizer_event("x.y.z"), LocalLambdaContext())

    assert allowed == {"isAuthorized": True, "context": {"user_id": str(ADMIN_ID)}}
    assert denied == {"isAuthorized": False, "context": {"reason": "not_admin"}}
    assert invalid == {"isAuthorized": False, "context": {"reason": "invalid_token"}}
