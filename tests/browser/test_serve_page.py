"""`deepmem serve` as a user runs it: it prints the admin page's URL, and opening that URL in
Chromium signs the admin in (the local token in the fragment) with every library loaded from
the server itself."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import ARTIFACTS, assert_accessible
from tests.db import TestServer

ROOT = Path(__file__).resolve().parents[2]


def wait_for_port(port: int, timeout: float = 30) -> None:
    """Until the server listens (today `serve` prints its URLs just before it binds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on port {port}"
            time.sleep(0.1)


@pytest.fixture
def served(tmp_path: Path, pg_server: TestServer) -> Iterator[tuple[str, list[str]]]:
    """The page URL `deepmem serve` printed, and what it printed."""
    name, database_url = pg_server.fresh_database()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SUPABASE"))}
    env |= {
        "DEEPMEM_HOME": str(tmp_path),
        "DATABASE_URL": database_url,
        "COLUMNS": "4000",
        "DEEPMEM_DATASET": "",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "deepmem.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    printed: list[str] = []
    try:
        assert server.stdout is not None
        for line in server.stdout:
            printed.append(line)
            if line.startswith("admin page: "):
                break
        assert printed and printed[-1].startswith("admin page: "), "".join(printed)
        wait_for_port(port)
        yield printed[-1].removeprefix("admin page: ").strip(), printed
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C: the server closes what it opened
        server.wait(timeout=30)
        pg_server.drop_database(name)


def test_the_printed_url_opens_the_page_signed_in(
    browser: Browser, served: tuple[str, list[str]]
) -> None:
    url, printed = served
    token = next(line.split()[-1] for line in printed if line.startswith("Authorization: "))
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/#token=" + re.escape(token), url)

    context = browser.new_context(bypass_csp=True, offline=False)
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    expect(page.get_by_role("heading", name="Training history")).to_be_visible()
    expect(page.get_by_text("No runs yet: press Generate.")).to_be_visible()
    expect(page.get_by_role("button", name="Generate", exact=True)).to_be_enabled()
    expect(page.locator(".local-dataset")).to_contain_text("hub://")
    assert page.evaluate("sessionStorage.getItem('deepmem.token')") == token
    assert "#token" not in page.url

    origin = url.split("/#")[0]
    assert requested and all(r.startswith(origin) for r in requested), requested
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-signed-in.png"), full_page=True)
    assert_accessible(page)
    context.close()
    assert errors == []
