"""Generation on real parts: the test PostgreSQL, a local DeepLake dataset, an
OpenAI-compatible server on loopback with faults, and a worker process killed mid-batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deepmem.adapters.store.postgres import PostgresStore, connect_pool
from deepmem.config import Config
from deepmem.domain.errors import GenerationError, TransientGenerationError
from deepmem.domain.models import Settings
from deepmem.domain.status import RunStatus
from deepmem.wiring import build_generation_service

from tests.fakes.llm_server import FakeLLMServer
from tests.integration.generation_support import build_test_dataset, service, walk_lanes

ROOT = Path(__file__).resolve().parents[2]
CHUNKS = 240


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_test_dataset(tmp_path_factory.mktemp("generation"), CHUNKS)


@pytest.fixture
def llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def _configure(store: PostgresStore, **changes: object) -> None:
    store.update_settings(Settings.model_validate(Settings().model_dump() | changes))


def _pairs(store: PostgresStore, run_id: object) -> list[tuple[str, str]]:
    return [(p.chunk_id, p.question) for p in store.list_pairs(run_id, limit=100_000)]  # type: ignore[arg-type]


def _assert_consistent(store: PostgresStore, run_id: object) -> None:
    run = store.get_run(run_id)  # type: ignore[arg-type]
    pairs = _pairs(store, run_id)
    assert run.pair_count == len(pairs) == len(set(pairs))


def test_generation_covers_every_chunk_once(
    postgres_store: PostgresStore, database_url: str, dataset: str, llm: FakeLLMServer
) -> None:
    _configure(postgres_store, lanes=3, batch_size=25, concurrency=8, questions_per_chunk=2)
    run = postgres_store.create_run(dataset, None)
    walk_lanes(service(database_url, llm.base_url), run.id)
    after = postgres_store.get_run(run.id)
    assert after.status == RunStatus.GENERATED
    assert after.total_chunks == after.processed_chunks == CHUNKS
    assert llm.stats()["chat"] == CHUNKS
    assert llm.max_calls_per_chunk() == 1
    assert after.llm_calls == CHUNKS
    assert after.pair_count == 2 * CHUNKS
    _assert_consistent(postgres_store, run.id)


class CountingPostgresStore(PostgresStore):
    """The real adapter, counting its round trips to PostgreSQL (one SQL function call each)."""

    def __init__(self, url: str) -> None:
        super().__init__(connect_pool(url))
        self.round_trips: list[str] = []

    def _execute(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        self.round_trips.append(sql.split("public.", 1)[1].split("(", 1)[0])
        return super()._execute(sql, params)


@pytest.mark.parametrize("resumed", [False, True])
def test_a_lane_makes_one_store_round_trip_per_batch(
    postgres_store: PostgresStore, database_url: str, dataset: str, resumed: bool
) -> None:
    _configure(postgres_store, max_chunks_per_run=100, lanes=2, batch_size=10, concurrency=4)
    run = postgres_store.create_run(dataset, None)
    counting = CountingPostgresStore(database_url)
    try:
        config = Config.model_validate(
            {"DATABASE_URL": database_url, "DEEPMEM_GENERATOR": "offline"}
        )
        svc = build_generation_service(config, store=counting)
        plan = svc.plan(run.id)
        if resumed:  # the first 15 chunks of lane 0 processed before: one batch whole, one half
            first = svc.batch(
                run.id,
                plan.lanes[0].model_copy(update={"stop": 15}),
                setup=plan.setup,
                attempt=plan.attempt,
            )
            assert first.new_chunks == 15
        for lane in plan.lanes:
            counting.round_trips.clear()
            progress = svc.batch(run.id, lane, setup=plan.setup, attempt=plan.attempt)
            assert progress.done
            batches = -(-(lane.stop - lane.cursor) // 10)
            # One per batch (its look-up carries the answers so far), one for the last answers.
            assert counting.round_trips == ["record_training_batch"] * (batches + 1)
        after = postgres_store.get_run(run.id)
        assert after.processed_chunks == 100
        _assert_consistent(postgres_store, run.id)
    finally:
        counting.close()


def test_chunk_cap_from_settings(
    postgres_store: PostgresStore, database_url: str, dataset: str, llm: FakeLLMServer
) -> None:
    _configure(postgres_store, max_chunks_per_run=30, lanes=2, batch_size=7)
    run = postgres_store.create_run(dataset, None)
    walk_lanes(service(database_url, llm.base_url), run.id)
    after = postgres_store.get_run(run.id)
    assert (after.status, after.total_chunks, after.processed_chunks) == ("generated", 30, 30)
    assert llm.stats()["chat"] == 30


def test_rate_limits_and_5xx_recover_by_retry(
    postgres_store: PostgresStore, database_url: str, dataset: str, llm: FakeLLMServer
) -> None:
    _configure(postgres_store, max_chunks_per_run=40, lanes=1, batch_size=20, concurrency=4)
    llm.configure(fail_first=6, fail_status=429, retry_after="0")
    run = postgres_store.create_run(dataset, None)
    svc = service(database_url, llm.base_url)
    walk_lanes(svc, run.id)
    after = postgres_store.get_run(run.id)
    assert after.status == RunStatus.GENERATED
    assert after.processed_chunks == 40
    assert llm.stats()["by_status"]["429"] == 6
    _assert_consistent(postgres_store, run.id)


def test_a_rate_cap_far_under_the_lanes_concurrency_fails_no_chunk(
    postgres_store: PostgresStore, database_url: str, dataset: str, llm: FakeLLMServer
) -> None:
    # 16 slots of 0.1 s calls would send 160 a second against a cap of 20 in any second: most
    # calls of the first second are refused, and with 3 retries a chunk fails on its fourth
    # refusal. Every retry takes a turn from the lane's pacer, which learned the cap from the
    # first refusals, so the burst never reaches one chunk four times.
    _configure(postgres_store, max_chunks_per_run=80, lanes=1, batch_size=40, concurrency=16)
    llm.configure(latency=0.1, rpm=20, rpm_window=1.0)
    run = postgres_store.create_run(dataset, None)
    config = Config.model_validate(
        {
            "DATABASE_URL": database_url,
            "OPENAI_BASE_URL": llm.base_url,
            "OPENAI_API_KEY": "test",
            "DEEPMEM_LLM_MAX_RETRIES": "3",
        }
    )
    walk_lanes(build_generation_service(config), run.id)
    after = postgres_store.get_run(run.id)
    assert (after.status, after.processed_chunks, after.failed_chunk_streak) == (
        RunStatus.GENERATED,
        80,
        0,
    )
    stats = llm.stats()
    assert stats["by_status"]["429"] > 0  # the cap did refuse calls
    assert stats["by_status"]["200"] == 80
    assert set(stats["answered_per_chunk"].values()) == {1}
    _assert_consistent(postgres_store, run.id)


def test_persistent_outage_fails_the_batch_and_loses_nothing(
    postgres_store: PostgresStore, database_url: str, dataset: str, llm: FakeLLMServer
) -> None:
    _configure(postgres_store, max_chunks_per_run=60, lanes=1, batch_size=20, concurrency=4)
    run = postgres_store.create_run(dataset, None)
    svc = service(database_url, llm.base_url)
    lane = svc.plan(run.id).lanes[0]
    first = svc.batch(run.id, lane.model_copy(update={"stop": 20}))
    assert first.new_chunks == 20
    llm.configure(fail_first=10_000, fail_status=503, retry_after="0")
    with pytest.raises(TransientGenerationError):
        svc.batch(run.id, lane)
    mid = postgres_store.get_run(run.id)
    assert mid.processed_chunks == 20
    _assert_consistent(postgres_store, run.id)
    # The outage ends; the lane is walked again from its start and only the rest is asked.
    llm.configure(fail_first=0)
    llm.reset()
    walk_lanes(svc, run.id)
    assert llm.stats()["chat"] == 40
    assert postgres_store.get_run(run.id).processed_chunks == 60


def test_refused_request_fails_at_once_with_a_clear_message(
    postgres_store: PostgresStore, database_url: str, dataset: str, llm: FakeLLMServer
) -> None:
    _configure(postgres_store, max_chunks_per_run=10, lanes=1, batch_size=10, concurrency=4)
    llm.configure(fail_first=1, fail_status=401)
    run = postgres_store.create_run(dataset, None)
    svc = service(database_url, llm.base_url)
    lane = svc.plan(run.id).lanes[0]
    with pytest.raises(GenerationError) as caught:
        svc.batch(run.id, lane)
    assert not isinstance(caught.value, TransientGenerationError)
    assert "401" in str(caught.value)
    assert llm.stats()["by_status"]["401"] == 1  # no retry
    # No new chunk starts after the refusal; the ones in flight finish and are kept.
    asked = llm.stats()["chat"]
    assert asked < 10
    assert postgres_store.get_run(run.id).processed_chunks == asked - 1
    llm.configure(fail_first=0)
    llm.reset()
    walk_lanes(svc, run.id)
    assert llm.stats()["chat"] == 10 - (asked - 1)


def test_malformed_output_and_meta_lines_keep_the_database_consistent(
    postgres_store: PostgresStore, database_url: str, dataset: str, llm: FakeLLMServer
) -> None:
    _configure(postgres_store, max_chunks_per_run=20, lanes=1, batch_size=10)
    llm.configure(content_mode="garbage")
    run = postgres_store.create_run(dataset, None)
    svc = service(database_url, llm.base_url)
    lane = svc.plan(run.id).lanes[0]
    garbage = svc.batch(run.id, lane.model_copy(update={"stop": 10}))
    assert garbage.new_chunks == 10  # processed, even with nothing usable
    llm.configure(content_mode="json", meta_lines=True)
    walk_lanes(svc, run.id)
    questions = [q for _, q in _pairs(postgres_store, run.id)]
    assert questions
    assert not [q for q in questions if q.lower().startswith("here are")]
    assert postgres_store.get_run(run.id).status == RunStatus.GENERATED
    _assert_consistent(postgres_store, run.id)


def test_offline_generator_without_an_endpoint(
    postgres_store: PostgresStore, database_url: str, dataset: str
) -> None:
    _configure(postgres_store, max_chunks_per_run=25, lanes=2, batch_size=10)
    run = postgres_store.create_run(dataset, None)
    walk_lanes(service(database_url, None), run.id)
    after = postgres_store.get_run(run.id)
    assert after.status == RunStatus.GENERATED
    assert after.pair_count > 0
    assert all(q.endswith("?") for _, q in _pairs(postgres_store, run.id))


def test_killed_worker_resumes_with_one_call_per_remaining_chunk(
    pg_server: object,
    postgres_store: PostgresStore,
    database_url: str,
    dataset: str,
    tmp_path: Path,
) -> None:
    _configure(postgres_store, lanes=1, batch_size=20, concurrency=8, questions_per_chunk=2)
    with FakeLLMServer(latency=0.05) as llm:
        run = postgres_store.create_run(dataset, None)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.generation_support",
                "--database-url",
                database_url,
                "--base-url",
                llm.base_url,
                "--run-id",
                str(run.id),
            ],
            cwd=ROOT,
            env={**os.environ, "POWERTOOLS_LOG_LEVEL": "ERROR"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while postgres_store.get_run(run.id).processed_chunks < 60:
            assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.02)
        # Mid-batch: calls are in flight for chunks not yet recorded.
        calls_before_kill = llm.stats()["chat"]
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        killed_at = postgres_store.get_run(run.id)
        assert 60 <= killed_at.processed_chunks < CHUNKS
        assert calls_before_kill >= killed_at.processed_chunks
        _assert_consistent(postgres_store, run.id)

        # Requests the dead worker left in flight still finish on the server: let them, so
        # the counters below hold only what the resume asks.
        time.sleep(0.3)  # accepted connections still queued in the listen backlog
        drain = time.monotonic() + 10
        while llm.in_flight and time.monotonic() < drain:
            time.sleep(0.01)
        llm.reset()
        walk_lanes(service(database_url, llm.base_url), run.id)
        resumed = postgres_store.get_run(run.id)
        remaining = CHUNKS - killed_at.processed_chunks
        assert llm.stats()["chat"] == remaining
        assert llm.max_calls_per_chunk() == 1
        assert resumed.status == RunStatus.GENERATED

    # The same run uninterrupted, on the same deterministic endpoint, gives the same pairs.
    name, other_url = pg_server.fresh_database()  # type: ignore[attr-defined]
    try:
        other = PostgresStore(connect_pool(other_url))
        _configure(other, lanes=1, batch_size=20, concurrency=8, questions_per_chunk=2)
        with FakeLLMServer() as llm2:
            clean = other.create_run(dataset, None)
            walk_lanes(service(other_url, llm2.base_url), clean.id)
        assert sorted(_pairs(other, clean.id)) == sorted(_pairs(postgres_store, run.id))
        other.close()
    finally:
        pg_server.drop_database(name)  # type: ignore[attr-defined]
