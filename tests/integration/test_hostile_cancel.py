"""Hostile probes of issue 15, item 2: cancel, then proceed, on the deployed ASL run by the local
workflow with the real task handlers and the real store on PostgreSQL.

Before: the cancelled worker kept walking its lane beside the new attempt's (60 LLM answers for
40 chunks) and the answers it held were dropped. Now every write carries the worker's attempt:
a cancelled attempt's worker records what it holds and stops; an older attempt's worker is
refused and makes no LLM call after the refusal.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from deepmem import wiring
from deepmem.adapters.generators.offline import OfflineQuestionGenerator
from deepmem.adapters.store.postgres import PostgresStore, connect_pool
from deepmem.config import Config
from deepmem.domain.chunks import Chunk
from deepmem.domain.errors import StaleWorkerError
from deepmem.domain.models import BatchOutcome, BatchRecord, SettingsUpdate
from deepmem.domain.status import Phase, RunStatus
from deepmem.local.functions import load_function
from deepmem.local.workflow import LocalWorkflow
from deepmem.ports import UNPACED, GeneratedQuestions, Pacer
from deepmem.services.generation import GenerationService
from deepmem.services.runs import RunService

from tests.integration.generation_support import build_test_dataset

CHUNKS = 24
FREE_CALLS = 6  # attempt 1 answers these at once; later calls wait for the gate
generate_batch = load_function("generate_batch")
record_failure = load_function("record_failure")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_test_dataset(tmp_path_factory.mktemp("cancel"), CHUNKS)


class Calls:
    """Every LLM call, by the attempt of the worker that made it, and a gate for attempt 1."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.made: list[tuple[int, str, float]] = []  # (attempt, chunk id, when)
        self.gate = threading.Event()
        self.worker = threading.local()
        self.ended: dict[int, list[BaseException | None]] = {}

    def of(self, attempt: int) -> list[str]:
        with self.lock:
            return [chunk for a, chunk, _ in self.made if a == attempt]

    def started_after(self, attempt: int, moment: float) -> list[str]:
        with self.lock:
            return [chunk for a, chunk, at in self.made if a == attempt and at > moment]


class CountingGenerator:
    def __init__(self, calls: Calls) -> None:
        self._calls = calls
        self._inner = OfflineQuestionGenerator()

    async def generate(
        self, chunk: Chunk, count: int, pacer: Pacer = UNPACED
    ) -> GeneratedQuestions:
        attempt = self._calls.worker.attempt
        with self._calls.lock:
            self._calls.made.append((attempt, chunk.id, time.monotonic()))
            held = attempt == 1 and len([c for c in self._calls.made if c[0] == 1]) > FREE_CALLS
        while held and not self._calls.gate.is_set():
            await asyncio.sleep(0.01)
        return await self._inner.generate(chunk, count, pacer)


class WatchedStore(PostgresStore):
    """The real store, noting when a worker's batch was refused or told to stop."""

    refused: list[tuple[int, float]]
    stopped: list[tuple[int, float]]
    written: dict[int, set[str]]

    def record_batch(self, batch: BatchRecord) -> BatchOutcome:
        try:
            outcome = super().record_batch(batch)
        except StaleWorkerError:
            self.refused.append((batch.attempt, time.monotonic()))
            raise
        self.written.setdefault(batch.attempt, set()).update(c.chunk_id for c in batch.chunks)
        if outcome.stop:
            self.stopped.append((batch.attempt, time.monotonic()))
        return outcome

    def told_to_end(self) -> float | None:
        """When the old worker first learned it must end (a stop or a refusal)."""
        moments = [at for _, at in self.stopped + self.refused]
        return min(moments) if moments else None


@pytest.fixture
def store(database_url: str) -> Iterator[WatchedStore]:
    store = WatchedStore(connect_pool(database_url, max_size=8))
    store.refused, store.stopped, store.written = [], [], {}
    store.update_settings(
        SettingsUpdate(lanes=1, batch_size=4, concurrency=2, questions_per_chunk=2).apply_to(
            store.get_settings()
        )
    )
    yield store
    store.close()


@pytest.fixture
def config(database_url: str, dataset: str, tmp_path: Path) -> Iterator[Config]:
    config = Config.model_validate(
        {"DATABASE_URL": database_url, "DEEPMEM_HOME": str(tmp_path), "DEEPMEM_DATASET": dataset}
    )
    yield config
    wiring.forget_run_stores()


@pytest.fixture
def calls() -> Iterator[Calls]:
    calls = Calls()
    yield calls
    calls.gate.set()  # never leave a worker waiting


@pytest.fixture
def workflow(store: WatchedStore, config: Config, calls: Calls) -> Iterator[LocalWorkflow]:
    generation = GenerationService(
        store, wiring.chunk_source_for(config), lambda _settings: CountingGenerator(calls)
    )

    def generate(event: dict[str, Any], context: Any) -> Any:
        attempt = int(event["attempt"])
        calls.worker.attempt = attempt
        outcome: BaseException | None = None
        try:
            return generate_batch.handle(event, generation, context)
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            if event["action"] == "batch":
                with calls.lock:
                    calls.ended.setdefault(attempt, []).append(outcome)

    def record(event: dict[str, Any], context: Any) -> Any:
        return record_failure.handle(event, store, None)

    with LocalWorkflow(
        {
            "GenerateBatchFunction": generate,
            "TrainFunction": lambda event, context: {},
            "RecordFailureFunction": record,
        }
    ) as workflow:
        yield workflow


def _until(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _cancel_while_calls_are_held(
    store: WatchedStore, workflow: LocalWorkflow, calls: Calls, dataset: str
) -> tuple[RunService, UUID]:
    runs = RunService(store, workflow, dataset)
    run_id = runs.start_generation(None).run.id
    # Two calls (the concurrency) wait at the gate, after FREE_CALLS were answered.
    _until(lambda: len(calls.of(1)) == FREE_CALLS + 2, "attempt 1 to hold two calls")
    cancelled = runs.cancel(run_id).run
    assert (cancelled.status, cancelled.attempt) == (RunStatus.GENERATING_FAILED, 1)
    return runs, run_id


def test_cancel_records_the_answers_held_and_proceed_pays_for_each_chunk_once(
    store: WatchedStore, workflow: LocalWorkflow, calls: Calls, dataset: str
) -> None:
    runs, run_id = _cancel_while_calls_are_held(store, workflow, calls, dataset)
    held = calls.of(1)[FREE_CALLS:]
    # With every slot waiting on the LLM, the lane's heartbeat learns of the cancel: stop.
    _until(lambda: store.stopped, "the cancelled worker to be told to stop")
    calls.gate.set()  # the answers in flight arrive after the cancel
    _until(lambda: calls.ended.get(1), "the cancelled worker to end")
    assert all(isinstance(e, StaleWorkerError) for e in calls.ended[1])
    # Its answers were recorded, not dropped; it was told to stop and started nothing more.
    assert store.processed_chunk_ids(run_id, held) == set(held)
    assert store.stopped and not store.refused
    assert calls.started_after(1, store.stopped[0][1]) == []
    run = store.get_run(run_id)
    assert (run.status, run.processed_chunks, run.error_message) == (
        RunStatus.GENERATING_FAILED,
        len(calls.of(1)),
        "cancelled",
    )

    remaining = CHUNKS - run.processed_chunks
    proceeded = runs.proceed(run_id).run
    workflow.wait(run_id, Phase.GENERATING, proceeded.attempt, timeout=120)
    run = store.get_run(run_id)
    assert (run.status, run.attempt, run.processed_chunks) == (RunStatus.GENERATED, 2, CHUNKS)
    assert len(calls.of(2)) == remaining == len(set(calls.of(2)))
    every = calls.of(1) + calls.of(2)
    assert sorted(every) == sorted(set(every)) and len(every) == CHUNKS  # one call per chunk
    assert run.pair_count == len(store.list_pairs(run_id, limit=1000)) == 2 * CHUNKS


def test_a_worker_of_an_older_attempt_is_refused_and_calls_no_llm_after(
    store: WatchedStore, workflow: LocalWorkflow, calls: Calls, dataset: str
) -> None:
    runs, run_id = _cancel_while_calls_are_held(store, workflow, calls, dataset)
    # Proceed at once, while the cancelled worker still holds its calls: a second worker.
    proceeded = runs.proceed(run_id).run
    # Told to stop (it learned of the cancel first) or refused (of the new attempt first).
    _until(lambda: store.told_to_end() is not None, "the old worker to be told to end")
    workflow.wait(run_id, Phase.GENERATING, proceeded.attempt, timeout=120)
    run = store.get_run(run_id)
    assert (run.status, run.attempt, run.processed_chunks) == (RunStatus.GENERATED, 2, CHUNKS)
    calls.gate.set()  # the old worker's held answers arrive after the new attempt ended
    _until(lambda: calls.ended.get(1), "the old worker to end")
    assert all(isinstance(e, StaleWorkerError) for e in calls.ended[1])
    assert store.refused and {a for a, _ in store.refused} == {1}  # its late write refused
    told = store.told_to_end()
    assert told is not None and calls.started_after(1, told) == []
    assert len(calls.of(1)) == FREE_CALLS + 2  # nothing after the two it held
    # The new attempt paid once for each chunk the old one had not recorded, never twice.
    second = calls.of(2)
    everything = set(calls.of(1) + second)
    assert len(everything) == CHUNKS
    assert len(second) == len(set(second))
    assert set(second) == everything - store.written.get(1, set())
    after = store.get_run(run_id)
    assert (after.status, after.attempt, after.processed_chunks) == (
        RunStatus.GENERATED,
        2,
        CHUNKS,
    )
    assert after.pair_count == len(store.list_pairs(run_id, limit=1000)) == 2 * CHUNKS
