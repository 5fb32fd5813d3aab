"""`deepmem serve`: the API's handlers behind a local HTTP server, authorizer included.

Each HTTP request becomes an API Gateway HTTP API (payload 2.0) event; the authorizer decides
on it as it would in AWS, its user id is placed in `requestContext.authorizer.lambda`, and the
same resolver the Lambda functions use answers. Unlike API Gateway, the local server tells
denials apart: an invalid or missing token is 401, a non-admin 403 (see `deepmem.api.auth`).

Powertools' resolver keeps the current event on a class attribute (one event per Lambda
instance at a time), so requests are handled by the resolver one at a time; connections are
still accepted concurrently, and the authorizer runs outside that lock. `GET /openapi.json`
serves the spec without authentication, and so does the admin page (`/`, `/dashboard/...`, see
`deepmem.dashboard.site`). The sockets are `deepmem.local.http_server`'s.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

from deepmem.api.auth import AuthDecision, Authorize, Denial
from deepmem.dashboard import site
from deepmem.local.lambda_runtime import LocalLambdaContext, authorizer_event, http_api_event

_DENIAL_DETAIL = {
    Denial.INVALID_TOKEN: "a valid access token is required",
    Denial.NOT_ADMIN: "only admins may use this API",
    Denial.UNAVAILABLE: "the authorizer cannot verify tokens right now",
}


class LocalApi:
    """Turns HTTP requests into answers: authorizer, then resolver. Usable without sockets."""

    def __init__(
        self,
        authorize: Authorize,
        resolver: APIGatewayHttpResolver | None = None,
        allow_origins: tuple[str, ...] = ("*",),
        page_config: site.PageConfig | None = None,
    ):
        if resolver is None:
            from deepmem.api.app import app

            resolver = app
        self.resolver: APIGatewayHttpResolver = resolver
        self.authorize = authorize
        self.allow_origins = allow_origins
        self._resolve_lock = threading.Lock()
        self.page_config = page_config  # None: from the environment, on the first page request

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {k.lower(): v for k, v in headers.items()}
        status, out_headers, payload = self._handle(method, target, headers, body)
        return status, out_headers | self._cors(headers.get("origin")), payload

    def _cors(self, origin: str | None) -> dict[str, str]:
        """As the HTTP API's CorsConfiguration does: a browser dashboard may call the server."""
        if not origin or not ("*" in self.allow_origins or origin in self.allow_origins):
            return {}
        return {
            "access-control-allow-origin": "*" if "*" in self.allow_origins else origin,
            "access-control-allow-headers": "authorization,content-type",
            "access-control-allow-methods": "GET,POST,PUT,DELETE,OPTIONS",
            "access-control-max-age": "600",
        }

    def _page(self, method: str, path: str) -> tuple[int, dict[str, str], bytes] | None:
        """The admin page (`/`, `/dashboard/...`): static files, no token needed."""
        if not site.is_page_path(path):
            return None
        if self.page_config is None:
            from deepmem.config import load_config

            self.page_config = site.PageConfig.of(load_config())
        page = site.answer(method, path, self.page_config)
        return None if page is None else (page.status, page.headers, page.body)

    def _handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if method == "OPTIONS" and "access-control-request-method" in headers:
            return 204, {}, b""  # a preflight carries no token: answered before the authorizer
        event = http_api_event(method, target, headers, body)
        page = self._page(method, event["rawPath"])
        if page is not None:
            return page
        if method == "GET" and event["rawPath"] == "/openapi.json":
            from deepmem.api.app import openapi_json

            return 200, {"content-type": "application/json"}, openapi_json(self.resolver).encode()
        decision: AuthDecision = self.authorize(authorizer_event(event))
        if decision.denial is not None:
            body_out = json.dumps({"detail": _DENIAL_DETAIL[decision.denial]}).encode()
            extra = {"www-authenticate": "Bearer"} if decision.http_status == 401 else {}
            return decision.http_status, {"content-type": "application/json", **extra}, body_out
        event["requestContext"]["authorizer"] = {"lambda": {"user_id": decision.user_id}}
        with self._resolve_lock:
            context: Any = LocalLambdaContext(function_name="deepmem-local-api")
            response = self.resolver.resolve(event, context)
        raw = response.get("body") or ""
        payload = base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode()
        out_headers = {k.lower(): str(v) for k, v in (response.get("headers") or {}).items()}
        return int(response["statusCode"]), out_headers, payload
