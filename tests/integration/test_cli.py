"""The `deepmem` command as a user runs it: a real process, the embedded PostgreSQL, the local
state machine, and the numbers it prints checked against the database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
from deepmem.adapters.trainers.artifacts import LocalArtifactStore
from deepmem.cli.runtime import EMBEDDED_DATABASE, ProcessLock
from deepmem.local.embedded_postgres import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[2]


def deepmem(home: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SUPABASE"))}
    env |= {"DEEPMEM_HOME": str(home), "COLUMNS": "200", "DEEPMEM_DATASET": ""}
    return subprocess.run(
        [sys.executable, "-m", "deepmem.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def embedded_db(home: Path) -> Iterator[psycopg.Connection]:
    with (
        EmbeddedPostgres(home / "postgres").session() as server,
        psycopg.connect(server.url_for(EMBEDDED_DATABASE)) as conn,
    ):
        yield conn


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deepmem-home")


@pytest.fixture(scope="module")
def demo_summary(demo_home: Path) -> dict[str, object]:
    """One demo with a generation fault and its recovery, shared by the checks below."""
    summary = demo_home / "summary.json"
    result = deepmem(
        demo_home, "demo", "--limit", "40", "--fail-at", "generating",
        "--summary-json", str(summary),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "POST /generate → 409" in result.stdout
    return json.loads(summary.read_text())


def test_demo_recovers_and_completes(demo_summary: dict[str, object]) -> None:
    assert demo_summary["status"] == "completed"
    assert demo_summary["attempts"] == 2
    assert demo_summary["chunks"] == 40
    recovered = demo_summary["recovered_from"]
    assert isinstance(recovered, list) and len(recovered) == 1
    assert "generating_failed" in recovered[0]
    assert demo_summary["recall_after"], "training reports recall after"


def test_demo_numbers_are_the_databases(demo_home: Path, demo_summary: dict[str, object]) -> None:
    with embedded_db(demo_home) as conn:
        run_id = demo_summary["run_id"]
        pairs = conn.execute(
            "select count(*) from training_pairs where run_id = %s", (run_id,)
        ).fetchone()
        chunks = conn.execute(
            "select count(*), count(distinct chunk_id) from training_run_chunks where run_id = %s",
            (run_id,),
        ).fetchone()
        status = conn.execute(
            "select status, total_chunks from training_runs where id = %s", (run_id,)
        ).fetchone()
    assert pairs is not None and chunks is not None and status is not None
    assert pairs[0] == demo_summary["pairs"]
    assert chunks[0] == chunks[1] == demo_summary["chunks"] == status[1]
    assert status[0] == "completed"


def test_cli_reads_what_the_demo_wrote(demo_home: Path, demo_summary: dict[str, object]) -> None:
    listed = deepmem(demo_home, "runs", "--json")
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert runs[0]["id"] == demo_summary["run_id"]
    assert runs[0]["pair_count"] == demo_summary["pairs"]
    page = deepmem(demo_home, "pairs", str(demo_summary["run_id"]), "--limit", "5", "--json")
    assert page.returncode == 0, page.stderr
    assert len(json.loads(page.stdout)) == 5


@pytest.fixture(scope="module")
def active_adapter(demo_home: Path, demo_summary: dict[str, object]) -> str:
    """The demo's adapter, made active by hand after the guard refused it: on 40 chunks the
    guard holds out too few questions to tell, so search first refuses to use it."""
    assert demo_summary["applied"] is False
    refused = deepmem(demo_home, "search", "How do I parse command line arguments?")
    assert refused.returncode == 1
    assert "no query adapter is active" in refused.stderr and "metrics.guard" in refused.stderr
    shown = deepmem(demo_home, "show", str(demo_summary["run_id"]))
    guard = json.loads(shown.stdout)["metrics"]["guard"]
    assert guard["applied"] is False and "too few" in guard["reason"]
    assert set(guard["before"]) == {"recall@1", "recall@5", "recall@10", "ndcg@10"}
    store = LocalArtifactStore(demo_home / "artifacts")
    assert store.active_job_id() is None
    job_id = str(json.loads(shown.stdout)["deeplake_job_id"])
    store.activate(job_id)
    return job_id


def test_search_uses_the_active_adapter(demo_home: Path, active_adapter: str) -> None:
    result = deepmem(demo_home, "search", "How do I parse command line arguments?", "--k", "3")
    assert result.returncode == 0, result.stderr
    assert "(adapter)" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("show", "not-a-uuid"), 2, "not a run id"),
        (("show", "00000000-0000-0000-0000-000000000000"), 3, "not found"),
        (("proceed", "00000000-0000-0000-0000-000000000000"), 3, "not found"),
        (("settings", "--set", "lanes=0"), 2, "lanes"),
        (("settings", "--set", "nonsense"), 2, "key=value"),
        (("demo", "--corpus", "/nonexistent/corpus"), 2, "does not exist"),
        (("eval", "/nonexistent/queries.jsonl"), 2, "does not exist"),
    ],
)
def test_bad_input_is_one_clear_line_and_an_exit_code(
    demo_home: Path, demo_summary: dict[str, object], args: tuple[str, ...], code: int, message: str
) -> None:
    result = deepmem(demo_home, *args)
    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_status_is_a_conflict(demo_home: Path, demo_summary: dict[str, object]) -> None:
    result = deepmem(demo_home, "delete", str(demo_summary["run_id"]))
    assert result.returncode == 4
    assert "completed" in result.stderr


def test_second_demo_while_one_runs_is_refused(tmp_path: Path) -> None:
    with ProcessLock(tmp_path / "demo.lock", "a deepmem demo"):
        result = deepmem(tmp_path, "demo", "--limit", "5")
    assert result.returncode == 1
    assert "already running" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = deepmem(tmp_path, "serve", "--port", str(port), timeout=60)
    assert result.returncode != 0
    assert "in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_eval_reports_base_and_adapter_recall(
    demo_home: Path, demo_summary: dict[str, object], active_adapter: str, tmp_path: Path
) -> None:
    page = deepmem(demo_home, "pairs", str(demo_summary["run_id"]), "--limit", "30", "--json")
    assert page.returncode == 0, page.stderr
    judged = [
        {"query": p["question"], "relevant": [p["chunk_id"]]} for p in json.loads(page.stdout)
    ]
    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join(json.dumps(j) for j in judged))
    result = deepmem(demo_home, "eval", str(queries))
    assert result.returncode == 0, result.stderr
    assert "30 queries (0 skipped)" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "recall@10" in line]
    assert rows, result.stdout
    numbers = [float(x) for x in rows[0].replace("│", " ").split()[1:3]]
    assert all(0.0 < n <= 1.0 for n in numbers)  # base and adapter both reported

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "no judgments"}\n')
    refused = deepmem(demo_home, "eval", str(bad))
    assert refused.returncode == 2  # bad input
    assert "bad.jsonl:1" in refused.stderr


def test_serve_answers_the_api_for_the_same_data(
    demo_home: Path, demo_summary: dict[str, object]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SUPABASE"))}
    env |= {"DEEPMEM_HOME": str(demo_home), "COLUMNS": "4000", "DEEPMEM_DATASET": ""}
    server = subprocess.Popen(
        [sys.executable, "-m", "deepmem.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        token = None
        assert server.stdout is not None
        for line in server.stdout:
            if line.startswith("Authorization: Bearer "):
                token = line.split()[-1]
            if "serving the API" in line:
                break
        assert token, "the server prints a local admin token"
        base = f"http://127.0.0.1:{port}/v1/api/deep-memory"
        # No retry: the URL is printed once the server accepts connections.
        answer = httpx.get(f"{base}/runs", headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert answer.status_code == 200, answer.text
        runs = answer.json()["runs"]
        assert runs[0]["id"] == demo_summary["run_id"]
        assert runs[0]["pair_count"] == demo_summary["pairs"]
        assert httpx.get(f"{base}/runs", timeout=60).status_code == 401
        forged = httpx.get(
            f"{base}/runs", headers={"Authorization": f"Bearer {token}x"}, timeout=60
        )
        assert forged.status_code == 401
        assert "detail" in forged.json()
        server.terminate()  # SIGTERM: a graceful stop, the embedded stack stopped, exit 0
        assert server.wait(timeout=60) == 0, server.stderr.read() if server.stderr else ""
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=30)


def test_a_second_demo_reuses_the_dataset_and_completes(
    demo_home: Path, demo_summary: dict[str, object]
) -> None:
    """Last in this module: it adds a run to the shared home."""
    summary = demo_home / "second.json"

    result = deepmem(demo_home, "demo", "--limit", "40", "--summary-json", str(summary))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "reused: same corpus, chunking and model" in result.stdout
    second = json.loads(summary.read_text())
    assert second["status"] == "completed"
    assert second["run_id"] != demo_summary["run_id"]
    assert second["chunks"] == demo_summary["chunks"]
