"""Verify Supabase access tokens and admit admins: the Lambda authorizer's logic.

Supabase signs access tokens with an asymmetric key (ES256 or RS256) published at
`<SUPABASE_URL>/auth/v1/.well-known/jwks.json`; older projects use a shared HS256 secret, which
is accepted only when configured. A token must carry a valid signature, `exp`, the expected
`aud` ("authenticated") and `iss` (`<SUPABASE_URL>/auth/v1`), and a `sub` that is a user id.
Admins are users whose `app_metadata.role` is "admin", or whose id is in a configured list.

401 vs 403: an HTTP API authorizer with simple responses can only allow or deny, and API
Gateway answers every denial with 403 (a request without an `Authorization` header gets 401
from the gateway itself, since the header is the identity source). The decision therefore
carries the reason (`invalid_token`, `not_admin`, `unavailable`) in the denial's context and in
the logs; the local server (`deepmem.local.api_server`) maps it to 401, 403 and 503.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from uuid import UUID

import jwt

from deepmem.api.jwks import JwksCache, JwksUnavailableError, jwks_cache
from deepmem.config import revealed
from deepmem.domain.errors import ConfigurationError, DeepmemError

ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "RS256"})
HS256 = "HS256"


class Denial(StrEnum):
    INVALID_TOKEN = "invalid_token"
    NOT_ADMIN = "not_admin"
    UNAVAILABLE = "unavailable"


_HTTP_STATUS = {Denial.INVALID_TOKEN: 401, Denial.NOT_ADMIN: 403, Denial.UNAVAILABLE: 503}


@dataclass(frozen=True)
class AuthDecision:
    user_id: str | None = None
    denial: Denial | None = None
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.denial is None

    @property
    def http_status(self) -> int:
        """What a server that can tell denials apart answers (the local server does)."""
        return 200 if self.denial is None else _HTTP_STATUS[self.denial]

    def to_simple_response(self) -> dict[str, Any]:
        """HTTP API Lambda authorizer, payload 2.0, simple response."""
        if self.denial is None:
            return {"isAuthorized": True, "context": {"user_id": self.user_id}}
        return {"isAuthorized": False, "context": {"reason": self.denial.value}}


def allow(user_id: str) -> AuthDecision:
    return AuthDecision(user_id=user_id)


def deny(denial: Denial, reason: str) -> AuthDecision:
    return AuthDecision(denial=denial, reason=reason)


@dataclass(frozen=True)
class AuthSettings:
    jwks_url: str | None
    issuer: str | None
    audience: str = "authenticated"
    hs256_secret: str | None = None
    admin_ids: frozenset[str] = field(default_factory=frozenset)
    leeway_seconds: int = 0
    jwks_deadline_seconds: float = 3.0  # the whole fetch; the function's timeout is 10 s


class AuthConfigurationError(ConfigurationError):
    """The authorizer cannot start as configured (a JWKS url with no issuer to check)."""


def require_issuer(config: Any) -> None:
    """A JWKS url with no issuer to check tokens against is refused at start, never a silent
    fall back (to local tokens in `deepmem serve`, to denying everyone in AWS)."""
    if config.jwks_url and not config.jwt_issuer:
        raise AuthConfigurationError(
            "SUPABASE_JWKS_URL is set but no issuer is: set SUPABASE_JWT_ISSUER (or "
            "SUPABASE_URL) so tokens are checked against it"
        )


def settings_from_config(
    config: Any, load_secret: Callable[[str], str] | None = None
) -> AuthSettings:
    """From `deepmem.config.Config`; the HS256 secret by value or from Secrets Manager."""
    secret = revealed(config.supabase_jwt_secret)
    if not secret and config.supabase_jwt_secret_name:
        if load_secret is None:
            from aws_lambda_powertools.utilities import parameters

            def load_secret(name: str) -> str:
                return str(parameters.get_secret(name, max_age=300))

        secret = load_secret(config.supabase_jwt_secret_name)
    require_issuer(config)
    return AuthSettings(
        jwks_url=config.jwks_url,
        issuer=config.jwt_issuer,
        audience=config.supabase_jwt_audience,
        hs256_secret=secret or None,
        admin_ids=config.admin_ids,
    )


class AuthUnavailableError(DeepmemError):
    """The authorizer cannot decide (no configuration, JWKS unreachable): not the caller's fault."""


#: Registered claims and the JSON types they may have (RFC 7519 §4.1); bool is not a number.
_NUMERIC_CLAIMS = ("exp", "nbf", "iat")


class InvalidClaimTypeError(jwt.InvalidTokenError):
    """A registered claim of the wrong type (`exp` as a string...)."""


def check_claim_types(claims: Mapping[str, Any]) -> None:
    for name in _NUMERIC_CLAIMS:
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidClaimTypeError(f"the {name!r} claim is not a number")
    for name in ("sub", "iss", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise InvalidClaimTypeError(f"the {name!r} claim is not a string")
    audience = claims.get("aud")
    if "aud" in claims and not (
        isinstance(audience, str)
        or (isinstance(audience, list) and all(isinstance(a, str) for a in audience))
    ):
        raise InvalidClaimTypeError("the 'aud' claim is neither a string nor a list of strings")


class TokenVerifier:
    def __init__(self, settings: AuthSettings, jwks: JwksCache | None = None) -> None:
        self.settings = settings
        self._jwks = jwks

    def _key_for(self, token: str, algorithm: str) -> Any:
        if algorithm in ASYMMETRIC_ALGORITHMS:
            if self._jwks is None:
                if not self.settings.jwks_url:
                    raise AuthUnavailableError("no JWKS url is configured")
                self._jwks = jwks_cache(self.settings.jwks_url, self.settings.jwks_deadline_seconds)
            kid = jwt.get_unverified_header(token).get("kid")
            if not isinstance(kid, str) or not kid:
                raise jwt.InvalidKeyError("the token names no key (kid)")
            try:
                signing_key = self._jwks.signing_key(kid)
            except JwksUnavailableError as exc:
                raise AuthUnavailableError(str(exc)) from exc
            if signing_key.algorithm_name != algorithm:
                raise jwt.InvalidAlgorithmError("the token's alg does not match its key")
            return signing_key.key
        if algorithm == HS256 and self.settings.hs256_secret:
            return self.settings.hs256_secret
        raise jwt.InvalidAlgorithmError(f"tokens signed with {algorithm!r} are not accepted")

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; raise jwt.PyJWTError when the token is not acceptable."""
        if not self.settings.issuer:
            raise AuthUnavailableError("no token issuer is configured")
        algorithm = str(jwt.get_unverified_header(token).get("alg", ""))
        # Types first: PyJWT reads `int(exp)`, so "exp": "9999999999" would pass its checks.
        check_claim_types(jwt.decode(token, options={"verify_signature": False}))
        key = self._key_for(token, algorithm)
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=self.settings.audience,
            issuer=self.settings.issuer,
            leeway=self.settings.leeway_seconds,
            options={"require": ["exp", "sub", "aud", "iss"]},
        )
        return claims

    def is_admin(self, claims: Mapping[str, Any]) -> bool:
        app_metadata = claims.get("app_metadata") or {}
        role = app_metadata.get("role") if isinstance(app_metadata, Mapping) else None
        return role == "admin" or str(claims.get("sub")) in self.settings.admin_ids

    def authorize(self, token: str | None) -> AuthDecision:
        if not token:
            return deny(Denial.INVALID_TOKEN, "no bearer token")
        try:
            claims = self.verify(token)
        except AuthUnavailableError as exc:
            return deny(Denial.UNAVAILABLE, str(exc))
        except (jwt.PyJWTError, TypeError, ValueError) as exc:  # a malformed token, any shape
            return deny(Denial.INVALID_TOKEN, f"{type(exc).__name__}: {exc}")
        user_id = str(claims["sub"])
        try:
            UUID(user_id)
        except ValueError:
            return deny(Denial.INVALID_TOKEN, "the token's subject is not a user id")
        if not self.is_admin(claims):
            return deny(Denial.NOT_ADMIN, f"user {user_id} is not an admin")
        return allow(user_id)


def bearer_token(event: Mapping[str, Any]) -> str | None:
    """The token of an HTTP API request or authorizer event (`Authorization: Bearer ...`)."""
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    value = headers.get("authorization")
    if value is None:
        sources = event.get("identitySource") or []
        value = sources[0] if sources else None
    if not value:
        return None
    scheme, _, token = str(value).strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


Authorize = Callable[[Mapping[str, Any]], AuthDecision]


def event_authorizer(verifier: TokenVerifier) -> Authorize:
    """The authorizer as a function of the request event (the Lambda and the local server)."""

    def authorize(event: Mapping[str, Any]) -> AuthDecision:
        return verifier.authorize(bearer_token(event))

    return authorize
