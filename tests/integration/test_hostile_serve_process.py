"""`deepmem serve` as a process: the URL is printed only once it accepts connections, SIGTERM
lets in-flight requests finish and exits 0, a taken port and a JWKS url without an issuer fail
at once with one clear line and a non-zero exit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.request import Request, urlopen

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The server `deepmem serve` runs (ApiServer over LocalApi), on the fakes instead of the
# embedded stack, with an authorizer that takes its time when asked to.
SERVER = """
import time
from deepmem.api.app import use_run_service
from deepmem.api.auth import allow
from deepmem.local.api_server import LocalApi
from deepmem.local.http_server import ApiServer, bind_socket
from deepmem.services.runs import RunService
from tests.fakes.memory_store import MemoryRunStore
from tests.fakes.workflow import FakeWorkflow

def authorize(event):
    if "x-slow" in (event.get("headers") or {}):
        time.sleep(2)
    return allow("00000000-0000-4000-8000-0000000000ad")

server = ApiServer(bind_socket("127.0.0.1", 0), LocalApi(authorize))
with use_run_service(RunService(MemoryRunStore(), FakeWorkflow(), dataset="/data/kb")):
    server.run(on_ready=lambda url: print("READY", url, flush=True))
print("STOPPED", flush=True)
"""


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "DEEPMEM_"))}
    return env | {"PYTHONPATH": f"{ROOT / 'layers' / 'common'}:{ROOT}"} | extra


@pytest.fixture
def server_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        cwd=ROOT,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("READY "), (line, process.stderr.read() if process.stderr else "")
        yield process, line.split()[1]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    with urlopen(Request(url, headers=headers or {}), timeout=30) as answer:
        return answer.status, json.loads(answer.read())


def test_the_url_is_printed_once_connections_are_accepted(server_process) -> None:
    _, url = server_process
    host, port = url.removeprefix("http://").split(":")

    # No retry: the first attempt right after the line must be served.
    with socket.create_connection((host, int(port)), timeout=5):
        pass
    assert get(f"{url}/v1/api/deep-memory/runs")[0] == 200


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(server_process) -> None:
    process, url = server_process
    answers: list[tuple[int, dict]] = []
    slow = threading.Thread(
        target=lambda: answers.append(get(f"{url}/v1/api/deep-memory/runs", {"x-slow": "1"}))
    )
    slow.start()
    time.sleep(0.7)  # the request is in the authorizer now

    process.send_signal(signal.SIGTERM)
    slow.join(timeout=30)
    out, err = process.communicate(timeout=30)

    assert [status for status, _ in answers] == [200]
    assert answers[0][1]["runs"] == []
    assert process.returncode == 0, err
    assert "STOPPED" in out
    with pytest.raises(OSError):
        get(f"{url}/v1/api/deep-memory/runs")


def deepmem(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepmem.cli", *args],
        cwd=ROOT,
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_taken_port_is_one_line_and_a_non_zero_exit(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        started = time.monotonic()
        result = deepmem("serve", "--port", str(port), DEEPMEM_HOME=str(tmp_path))

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is already in use: stop the other server or pick "
        "another port (--port)"
    ]
    assert not any(tmp_path.iterdir())  # failed before starting anything
    assert time.monotonic() - started < 30


def test_a_jwks_url_without_an_issuer_is_a_startup_error(tmp_path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = deepmem(
        "serve",
        "--port",
        str(port),
        DEEPMEM_HOME=str(tmp_path),
        SUPABASE_JWKS_URL="http://127.0.0.1:9/auth/v1/.well-known/jwks.json",
    )

    assert result.returncode == 2
    assert "SUPABASE_JWT_ISSUER" in result.stderr
    assert "Bearer" not in result.stdout  # no local token: no silent fallback
    assert len(result.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())
