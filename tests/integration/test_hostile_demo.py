"""Hostile probes of the `deepmem` command (issue 15, items 3 and 8): the demo on a corpus too
small to train on, or swapped under an unfinished run, `--fail-at` on a corpus too small to fail
halfway, and generation with no LLM key. A real process each time, on the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.generation_support import write_corpus

ROOT = Path(__file__).resolve().parents[2]
# Several `deepmem` processes per test, each starting the embedded PostgreSQL.
pytestmark = pytest.mark.timeout(900)


def deepmem(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "SUPABASE", "OPENAI", "DEEPMEM_"))
    }
    env |= {"DEEPMEM_HOME": str(home), "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "deepmem.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _run_ids(home: Path) -> list[str]:
    listed = deepmem(home, "runs", "--json")
    assert listed.returncode == 0, listed.stderr
    return [run["id"] for run in json.loads(listed.stdout)]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-home")


def test_fail_at_refuses_a_corpus_too_small_to_fail_halfway(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "two", 2)

    result = deepmem(tmp_path / "home", "demo", "--corpus", str(corpus), "--fail-at", "generating")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "needs at least 3 chunks to fail halfway; the dataset has 2" in result.stderr
    assert "Traceback" not in result.stderr
    assert _run_ids(tmp_path / "home") == []


def test_a_too_small_corpus_fails_with_the_way_out_and_so_does_every_later_demo(
    home: Path, tmp_path: Path
) -> None:
    corpus = write_corpus(tmp_path / "three", 3)

    first = deepmem(home, "demo", "--corpus", str(corpus))

    assert first.returncode == 1, first.stdout + first.stderr
    (run_id,) = _run_ids(home)
    assert "TooFewPairsError" in first.stderr
    assert "training needs at least 10" in first.stderr
    assert f"deepmem delete {run_id}" in first.stderr
    assert "generator: offline" in first.stdout

    second = deepmem(home, "demo", "--corpus", str(corpus))

    assert second.returncode == 1, second.stdout + second.stderr
    assert f"deepmem delete {run_id}" in second.stderr
    assert _run_ids(home) == [run_id]


def test_the_demo_never_resumes_over_a_corpus_swapped_under_its_run(
    home: Path, tmp_path: Path
) -> None:
    """After the test above: its failed run is still there, over a 3-chunk dataset."""
    listed = deepmem(home, "runs", "--json")
    (shown,) = json.loads(listed.stdout)
    run_id = shown["id"]
    assert shown["generator"] == "offline" and shown["dataset_fingerprint"]
    other = write_corpus(tmp_path / "twelve", 12)

    result = deepmem(home, "demo", "--corpus", str(other))

    assert result.returncode == 4, result.stdout + result.stderr
    assert "another version of dataset" in result.stderr
    assert f"deepmem delete {run_id}" in result.stderr
    # The way out works.
    deleted = deepmem(home, "delete", run_id)
    assert deleted.returncode == 0, deleted.stderr


def test_generate_without_a_key_is_refused_and_settings_say_why(tmp_path: Path) -> None:
    home = tmp_path / "home"
    corpus = write_corpus(tmp_path / "corpus", 12)
    built = deepmem(home, "demo", "--corpus", str(corpus))
    assert built.returncode == 0, built.stdout + built.stderr
    before = _run_ids(home)

    refused = deepmem(home, "generate")

    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "DEEPMEM_GENERATOR=offline" in refused.stderr
    assert _run_ids(home) == before
    settings = json.loads(deepmem(home, "settings").stdout)
    assert settings["generator"] is None
    assert "OPENAI_API_KEY" in settings["generator_problem"]
    assert settings["embedding_model_source"] == "dataset"
    assert settings["embedding_model_in_use"] != settings["settings"]["embedding_model"]
