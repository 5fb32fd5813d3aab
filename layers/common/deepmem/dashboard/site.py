"""The admin page's server side: its static files and its configuration, nothing else.

The page is served at `/` (index.html) and `/dashboard/<file>`; `/dashboard/config.json` tells
it where the API is and how to sign in (Supabase Auth when the project URL and anon key are
configured, else a local admin token, as `deepmem serve` prints). None of it needs a token:
the page holds no data, it calls the public API with the admin's bearer token.

One function, `answer`, serves `deepmem serve` (through `LocalApi`) and the `dashboard` Lambda
function (through `handle_event`). The vendored libraries under `static/vendor/` are copied
from node_modules by `npm ci` (scripts/vendor-dashboard.mjs), never committed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel

from deepmem.config import Config

STATIC = Path(__file__).resolve().parent / "static"
PAGE = "/"
ASSETS = "/dashboard/"
CONFIG = "/dashboard/config.json"
API_BASE = "/v1/api/deep-memory"
#: What `npm ci` copies into static/vendor/ (keep in step with scripts/vendor-dashboard.mjs).
VENDORED = ("vendor/htm-preact.umd.js", "vendor/supabase.js")

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")


class PageConfig(BaseModel):
    """Body of GET /dashboard/config.json."""

    api_base: str = API_BASE
    auth: Literal["supabase", "local-token"]
    supabase_url: str | None = None
    supabase_anon_key: str | None = None

    @classmethod
    def of(cls, config: Config) -> PageConfig:
        if config.supabase_url and config.supabase_anon_key:
            return cls(
                auth="supabase",
                supabase_url=config.supabase_url.rstrip("/"),
                supabase_anon_key=config.supabase_anon_key,
            )
        return cls(auth="local-token")


@dataclass(frozen=True)
class PageAnswer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def is_page_path(path: str) -> bool:
    return path == PAGE or path == ASSETS.rstrip("/") or path.startswith(ASSETS)


def security_headers(config: PageConfig) -> dict[str, str]:
    """Scripts and styles from this origin only; the API and, signed in with Supabase, its
    project (REST for the session, WebSocket for Realtime)."""
    connect = ["'self'"]
    if config.supabase_url:
        host = urlsplit(config.supabase_url).netloc
        connect += [config.supabase_url, f"wss://{host}"]
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {' '.join(connect)}; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return {
        "content-security-policy": policy,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-cache",
    }


def _json(status: int, body: Any, headers: dict[str, str]) -> PageAnswer:
    content = {"content-type": "application/json", **headers}
    return PageAnswer(status, content, json.dumps(body).encode())


def answer(method: str, path: str, config: PageConfig) -> PageAnswer | None:
    """The page's answer to a request, or None when the path is not the page's (the API's)."""
    if not is_page_path(path):
        return None
    headers = security_headers(config)
    if method not in ("GET", "HEAD"):
        return _json(405, {"detail": "the admin page is read-only: use GET"}, headers)
    if path == CONFIG:
        return _json(200, config.model_dump(mode="json"), headers)
    name = "index.html" if path in (PAGE, ASSETS, ASSETS.rstrip("/")) else path[len(ASSETS) :]
    file = _static_file(name)
    if file is None:
        detail = f"no such file of the admin page: {path}"
        if name in VENDORED:
            detail = f"{name} is not vendored: run `npm ci` in the repository (package.json)"
        return _json(404, {"detail": detail}, headers)
    content_type = _CONTENT_TYPES.get(file.suffix, "application/octet-stream")
    return PageAnswer(200, {"content-type": content_type, **headers}, file.read_bytes())


def _static_file(name: str) -> Path | None:
    if not _SAFE_NAME.match(name):
        return None
    file = (STATIC / name).resolve()
    if not file.is_relative_to(STATIC) or not file.is_file():
        return None
    return file


def handle_event(event: dict[str, Any], config: Config) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event → its response (the `dashboard` function)."""
    method = str(event.get("requestContext", {}).get("http", {}).get("method", "GET")).upper()
    page = answer(method, str(event.get("rawPath") or PAGE), PageConfig.of(config))
    if page is None:
        page = _json(404, {"detail": "Not found"}, {})
    return {
        "statusCode": page.status,
        "headers": page.headers,
        "body": "" if method == "HEAD" else page.body.decode("utf-8"),
        "isBase64Encoded": False,
    }
