"""Hostile probe of the local safety net (issue 15, item 5): a `deepmem generate` killed with
SIGKILL mid-generation leaves its run `generating`; once its lease expires the next command
that opens the store fails it (`generating_failed`, saying what happened and the way out), and
`deepmem proceed` completes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fakes.llm_server import FakeLLMServer
from tests.integration.generation_support import build_test_dataset
from tests.integration.test_cli import ROOT

CHUNKS = 40
LEASE_SECONDS = 2.0


def _env(home: Path, dataset: str, llm: FakeLLMServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SUPABASE"))}
    return env | {
        "DEEPMEM_HOME": str(home),
        "DEEPMEM_DATASET": dataset,
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "test",
        "DEEPMEM_LOCAL_LEASE_SECONDS": str(LEASE_SECONDS),
        "COLUMNS": "200",
    }


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepmem.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _kill_mid_generation(env: dict[str, str], llm: FakeLLMServer, log: Path) -> None:
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "deepmem.cli", "generate"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while llm.stats()["chat"] < 3:
            assert worker.poll() is None, f"generate ended first: {log.read_text()}"
            assert time.monotonic() < deadline, f"no LLM call: {log.read_text()}"
            time.sleep(0.05)
    finally:
        worker.kill()  # SIGKILL: no handler, no safety net of the process runs
        worker.wait()


def test_a_killed_generation_is_failed_by_the_next_command_and_proceeds(tmp_path: Path) -> None:
    dataset = build_test_dataset(tmp_path, CHUNKS)
    home = tmp_path / "home"
    with FakeLLMServer(latency=0.3) as llm:
        env = _env(home, dataset, llm)
        _kill_mid_generation(env, llm, tmp_path / "generate.log")
        killed_at = time.monotonic()
        answered = llm.stats()["chat"]
        assert answered < CHUNKS, "killed mid-generation"
        time.sleep(max(0.0, killed_at + LEASE_SECONDS + 0.5 - time.monotonic()))

        listed = _cli(env, "runs", "--json")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        (run,) = json.loads(listed.stdout)
        assert run["status"] == "generating_failed", run
        assert "local deepmem process" in run["error_message"]
        assert f"deepmem proceed {run['id']}" in run["error_message"]
        assert run["attempt"] == 1
        assert run["processed_chunks"] < CHUNKS

        proceeded = _cli(env, "proceed", run["id"])
        assert proceeded.returncode == 0, proceeded.stdout + proceeded.stderr

        shown = _cli(env, "show", run["id"])
        assert shown.returncode == 0, shown.stdout + shown.stderr
        final = json.loads(shown.stdout)
        assert final["status"] == "generated", final
        assert final["attempt"] == 2
        assert final["processed_chunks"] == final["total_chunks"] == CHUNKS
        assert final["error_message"] is None


def test_a_live_lease_is_not_swept_and_sigterm_stops_generate_cleanly(tmp_path: Path) -> None:
    """A command beside a running local execution leaves it running (its lease is renewed);
    SIGTERM to `generate` then stops its execution, marks the run and stops the database."""
    dataset = build_test_dataset(tmp_path, CHUNKS)
    home = tmp_path / "home"
    with FakeLLMServer(latency=45.0) as llm:  # every call outlasts the checks below
        env = _env(home, dataset, llm) | {"DEEPMEM_LLM_TIMEOUT": "300"}
        log = tmp_path / "generate.log"
        with log.open("w") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "deepmem.cli", "generate"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 180
            while llm.stats()["chat"] < 1:
                assert worker.poll() is None, f"generate ended first: {log.read_text()}"
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(LEASE_SECONDS * 1.5)  # longer than one lease: only renewal keeps it
            listed = _cli(env, "runs", "--json")
            assert listed.returncode == 0, listed.stdout + listed.stderr
            (run,) = json.loads(listed.stdout)
            assert worker.poll() is None, "still generating (45 s a call)"
            assert run["status"] == "generating", run
            worker.terminate()  # SIGTERM
            code = worker.wait(timeout=150)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        assert code == 128 + signal.SIGTERM, log.read_text()
        assert not (home / "postgres" / "postmaster.pid").exists(), "its database stopped"
        shown = _cli(env, "show", run["id"])
        assert shown.returncode == 0, shown.stdout + shown.stderr
        final = json.loads(shown.stdout)
        assert final["status"] == "generating_failed", final
        assert final["attempt"] == 1
