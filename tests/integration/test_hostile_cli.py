"""Hostile probes of the `deepmem` command: every usage error is one line and exit 2, the
README's exit codes hold where the API answers 422 and 409, and the CLI refuses exactly what
PUT /settings refuses (one model, `SettingsUpdateRequest`, for both)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deepmem import __version__
from deepmem.api.app import use_run_service
from deepmem.services.runs import RunService

from tests.api_support import Answer, api_event, call, load_function
from tests.fakes.memory_store import MemoryRunStore
from tests.fakes.workflow import FakeWorkflow

ROOT = Path(__file__).resolve().parents[2]
P = "/v1/api/deep-memory"


def deepmem(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "SUPABASE", "DEEPMEM_", "STATE_MACHINE"))
    }
    env |= {"DEEPMEM_HOME": str(home), "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "deepmem.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("show",), "Missing argument"),
        (("show", "-x"), "No such option: -x"),
        (("bogus",), "No such command 'bogus'"),
        (("serve", "--port", "abc"), "--port"),
        (("serve", "--port", "70000"), "--port"),
        (("runs", "--limit", "0"), "--limit"),
        (("runs", "--limit", "501"), "--limit"),  # GET /runs?limit=501 is 422 too
        (("pairs", "00000000-0000-4000-8000-000000000001", "--limit", "501"), "--limit"),
        (("runs", "--offset", "10000001"), "--offset"),
        (("settings", "--set"), "--set"),
        (("demo", "--fail-at", "nowhere"), "--fail-at"),
        (("show", "not-a-uuid"), "not a run id"),
        (("settings", "--set", "nonsense"), "key=value"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(tmp_path, args, says) -> None:
    result = deepmem(tmp_path, *args)

    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert says in lines[0]
    assert not any(tmp_path.iterdir())  # nothing was started for a command that cannot run


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_has_a_short_flag(tmp_path, flag) -> None:
    top = deepmem(tmp_path, flag)
    sub = deepmem(tmp_path, "settings", flag)

    assert top.returncode == 0 and sub.returncode == 0
    assert "Usage: deepmem" in top.stdout
    assert "--set" in sub.stdout


def test_version(tmp_path) -> None:
    result = deepmem(tmp_path, "--version")

    assert result.returncode == 0
    assert result.stdout.strip() == f"deepmem {__version__}"


def put_settings(body: dict[str, Any]) -> Answer:
    """PUT /settings through the settings Lambda's handler, on a local dataset."""
    service = RunService(MemoryRunStore(), FakeWorkflow(), dataset="/data/kb")
    with use_run_service(service):
        return call(load_function("settings"), api_event("PUT", f"{P}/settings", body))


# One table, both edges: what PUT /settings answers 422, `settings --set` exits 2 on.
REFUSED = [
    ("lanes=true", {"lanes": True}),
    ("lanes=3.5", {"lanes": 3.5}),
    ("lanes=0", {"lanes": 0}),
    ("lanes=none", {"lanes": None}),
    ("batch_size=" + "9" * 30, {"batch_size": 10**30}),
    ("llm_model=bad~name", {"llm_model": "bad~name"}),
    ("llm_model=", {"llm_model": ""}),
    ("embedding_model=-leading-dash", {"embedding_model": "-leading-dash"}),
    ("trainer=nope", {"trainer": "nope"}),
    ("user_role=admin", {"user_role": "admin"}),
]


@pytest.mark.parametrize(("cli", "body"), REFUSED, ids=[cli for cli, _ in REFUSED])
def test_the_cli_refuses_what_the_api_refuses(tmp_path, cli, body) -> None:
    store = MemoryRunStore()
    with use_run_service(RunService(store, FakeWorkflow(), dataset="/data/kb")):
        api = call(
            load_function("settings"), api_event("PUT", "/v1/api/deep-memory/settings", body)
        )
    result = deepmem(tmp_path, "settings", "--set", cli)

    assert api.status == 422, api.body
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    field = cli.partition("=")[0]
    assert field in result.stderr
    assert field in json.dumps(api.body["detail"])


def test_a_setting_the_dataset_cannot_honour_is_a_conflict_on_both_edges(tmp_path) -> None:
    store = MemoryRunStore()
    body = {"trainer": "deep_memory"}
    with use_run_service(RunService(store, FakeWorkflow(), dataset="/data/kb")):
        api = call(
            load_function("settings"), api_event("PUT", "/v1/api/deep-memory/settings", body)
        )
    result = deepmem(tmp_path, "settings", "--set", "trainer=deep_memory")

    assert api.status == 409
    assert result.returncode == 4, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "deep_memory" in result.stderr or "Deep Memory" in result.stderr
