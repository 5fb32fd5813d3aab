"""`deepmem serve`: the API's handlers behind a local HTTP server, with the real authorizer.

With no token issuer configured (no SUPABASE_URL / SUPABASE_JWT_ISSUER, and no JWKS url: one
without an issuer is a startup error, never a fall back to local tokens), the server signs its
own: a local HS256 secret kept in `<home>/jwt-secret`, and an admin token printed at start, so
a dashboard or `curl` can call it at once. Tokens are verified exactly as in AWS."""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path

from rich.console import Console

from deepmem.cli.runtime import Runtime
from deepmem.config import Config, load_config

LOCAL_ISSUER = "deepmem-local"
LOCAL_ADMIN = "00000000-0000-4000-8000-000000000001"


def local_secret(home: Path) -> str:
    path = home / "jwt-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def local_admin_token(secret: str, hours: float = 12.0) -> str:
    import jwt

    now = int(time.time())
    claims = {
        "sub": LOCAL_ADMIN,
        "aud": "authenticated",
        "iss": LOCAL_ISSUER,
        "iat": now,
        "exp": now + int(hours * 3600),
        "role": "authenticated",
        "app_metadata": {"role": "admin"},
        "session_id": str(uuid.uuid4()),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def authorizer_for(config: Config, console: Console) -> tuple[object, str | None]:
    """The authorizer, and the local admin token when the server signs its own."""
    from deepmem.api.auth import AuthSettings, TokenVerifier, event_authorizer, settings_from_config

    settings = settings_from_config(config)
    token = None
    if settings.issuer is None:
        secret = local_secret(config.home)
        settings = AuthSettings(
            jwks_url=None, issuer=LOCAL_ISSUER, hs256_secret=secret, admin_ids=settings.admin_ids
        )
        token = local_admin_token(secret)
        console.print("no token issuer configured: local tokens, for example this admin one:")
        console.print(f"Authorization: Bearer {token}", soft_wrap=True)
    return event_authorizer(TokenVerifier(settings)), token


def page_url(host: str, port: int, token: str | None) -> str:
    """The admin page; with a local token in the fragment (never sent to the server, kept by
    the page in the tab's session storage), opening it signs the admin in."""
    return f"http://{host}:{port}/" + (f"#token={token}" if token else "")


def run_server(console: Console, host: str, port: int) -> None:
    """Bind first (a taken port fails before anything starts), print the URL once the socket
    accepts connections, and return after SIGTERM/SIGINT once in-flight requests finished:
    leaving `Runtime` is the one shutdown path (the embedded database stops there)."""
    from deepmem.api.app import use_run_service
    from deepmem.local.api_server import LocalApi
    from deepmem.local.http_server import ApiServer, bind_socket

    sock = bind_socket(host, port)
    try:
        # Before the runtime: a misconfigured authorizer (a JWKS url with no issuer) fails at once.
        authorize, token = authorizer_for(load_config(), console)
        with Runtime(time_scale=0.05) as runtime:
            server = ApiServer(sock, LocalApi(authorize))  # type: ignore[arg-type]

            def ready(url: str) -> None:
                console.print(f"serving the API on {url}/v1/api/deep-memory (Ctrl-C stops)")
                console.print(f"admin page: {page_url(host, port, token)}", soft_wrap=True)

            with use_run_service(runtime.runs()):
                server.run(on_ready=ready)
    finally:
        sock.close()
    console.print("stopped")
