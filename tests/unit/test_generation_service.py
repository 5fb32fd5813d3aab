"""GenerationService on fakes: store round trips per batch, none on the event loop, and resume
by chunk identity across failed and retried lane calls."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any
from uuid import UUID

import pytest
from deepmem.domain.chunks import Chunk, Lane
from deepmem.domain.errors import (
    GenerationError,
    InvalidTransitionError,
    RetryBudgetExhaustedError,
    RunSourceChangedError,
    TooFewPairsError,
    TransientGenerationError,
)
from deepmem.domain.handover import GenerationLimits, HandoverBudget
from deepmem.domain.models import BatchOutcome, BatchRecord, ChunkQuestions, Settings
from deepmem.domain.provenance import GeneratorChoice
from deepmem.domain.status import RunStatus
from deepmem.ports import UNPACED, GeneratedQuestions, Pacer
from deepmem.services.generation import GenerationService, Handover, LaneSetup

from tests.fakes import events
from tests.fakes.memory_store import MemoryRunStore

DATASET = "mem://corpus"


class CountingStore:
    """The fake store, counting calls (each one is a round trip for a real adapter) and the
    thread each ran on."""

    def __init__(self, inner: MemoryRunStore) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self.threads: set[int] = set()
        self.before_write: Any = None  # called inside record_batch, before it writes

    def reset(self) -> None:
        self.calls.clear()
        self.threads.clear()

    def record_batch(self, batch: BatchRecord) -> BatchOutcome:
        self.calls.append("record_batch")
        self.threads.add(threading.get_ident())
        if self.before_write is not None:
            self.before_write(batch)
        return self.inner.record_batch(batch)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            self.threads.add(threading.get_ident())
            return attribute(*args, **kwargs)

        return counted


class ListSource:
    def __init__(self, count: int) -> None:
        self.chunks = [Chunk(id=f"chunk-{i:04d}", text=f"Text {i}.") for i in range(count)]

    def count(self) -> int:
        return len(self.chunks)

    def fingerprint(self) -> str:
        return "|".join(c.id for c in self.chunks)

    def read(self, start: int, stop: int) -> list[Chunk]:
        return self.chunks[start:stop]


class FakeGenerator:
    """Answers after a short sleep; fails for good from the `fail_from`-th call on."""

    def __init__(self, fail_from: int | None = None) -> None:
        self.asked: Counter[str] = Counter()
        self.answered: set[str] = set()
        self.answers = 0
        self.in_flight = 0
        self.fail_from = fail_from

    async def generate(
        self, chunk: Chunk, count: int, pacer: Pacer = UNPACED
    ) -> GeneratedQuestions:
        self.asked[chunk.id] += 1
        self.in_flight += 1
        try:
            await asyncio.sleep(0.002)
            if self.fail_from is not None and sum(self.asked.values()) >= self.fail_from:
                raise GenerationError("refused for good")
            self.answers += 1
            self.answered.add(chunk.id)
            return GeneratedQuestions(chunk.id, [f"What is {chunk.id}?"], tokens_used=5)
        finally:
            self.in_flight -= 1


def _service(
    chunks: int, settings: Settings, generator: FakeGenerator
) -> tuple[GenerationService, CountingStore, UUID]:
    store = CountingStore(MemoryRunStore(settings))
    source = ListSource(chunks)
    service = GenerationService(store, lambda _dataset: source, lambda _settings: generator)
    run = store.inner.create_run(DATASET, None)
    return service, store, run.id


def _walk(service: GenerationService, run_id: UUID, lane: Lane, setup: LaneSetup) -> Lane:
    while True:
        progress = service.batch(run_id, lane, setup=setup, attempt=1)
        lane = progress.lane
        if progress.done:
            return lane


def test_the_plan_carries_what_a_lane_needs() -> None:
    settings = Settings(batch_size=7, concurrency=3, lanes=2, questions_per_chunk=2)
    service, store, run_id = _service(30, settings, FakeGenerator())
    before = time.time()
    plan = service.plan(run_id)
    assert (plan.setup.dataset, plan.setup.settings) == (DATASET, settings)
    assert plan.model_dump(mode="json")["setup"]["settings"]["batch_size"] == 7
    # The execution's budget: calls per lane from the event budget, a deadline 20 h out.
    budget = plan.setup.handover
    assert budget is not None and budget.calls_per_lane == (10_000 - 30 - 2 * 6) // (7 * 2)
    assert before + 72_000 <= budget.deadline <= time.time() + 72_000
    # The plan's estimate is recorded on the run.
    assert plan.estimate is not None and plan.estimate.total_chunks == 30
    assert store.inner.get_run(run_id).estimate == plan.estimate.model_dump(mode="json")


def test_a_lane_over_its_deadline_hands_over_after_one_batch_and_finish_names_the_next() -> None:
    settings = Settings(batch_size=5, concurrency=4, lanes=2)
    generator = FakeGenerator()
    store = CountingStore(MemoryRunStore(settings))
    source = ListSource(30)
    limits = GenerationLimits(seconds_budget=0)  # every execution hands over after a batch
    service = GenerationService(
        store, lambda _dataset: source, lambda _settings: generator, limits=limits
    )
    run_id = store.inner.create_run(DATASET, None).id
    plan = service.plan(run_id)
    segments = 0
    lanes = plan.lanes
    while True:
        ends = []
        for lane in plan.lanes:
            progress = service.batch(run_id, lane, setup=plan.setup)
            assert progress.handover is not progress.done
            assert progress.lane.cursor - lane.cursor == 5  # one batch, then the deadline
            ends.append(progress.lane)
        outcome = service.finish(run_id, attempt=plan.attempt, lanes=ends, segment=segments)
        if not isinstance(outcome, Handover):
            break
        segments += 1
        assert outcome.segment == segments and outcome.lanes == [x for x in ends if not x.done]
        plan = service.plan(
            run_id, attempt=outcome.attempt, segment=outcome.segment, lanes=outcome.lanes
        )
        assert plan.estimate is None and all(lane.calls == 0 for lane in plan.lanes)
        lanes = plan.lanes
    assert lanes and segments == 2  # 15 chunks a lane, 5 a batch: three executions
    assert outcome.status is RunStatus.GENERATED and outcome.processed_chunks == 30
    assert max(generator.asked.values()) == 1


def test_a_lane_over_its_calls_hands_over() -> None:
    settings = Settings(batch_size=5, lanes=1)
    service, _, run_id = _service(30, settings, FakeGenerator())
    plan = service.plan(run_id)
    setup = plan.setup.model_copy(
        update={"handover": HandoverBudget(calls_per_lane=2, deadline=time.time() + 3600)}
    )
    lane = plan.lanes[0]
    for calls in (1, 2):
        time_left = iter([10**9] + [0] * 100)  # the invocation's time runs out after a batch
        progress = service.batch(run_id, lane, remaining_ms=time_left.__next__, setup=setup)
        lane = progress.lane
        assert (lane.calls, progress.done, progress.handover) == (calls, False, calls == 2)
    assert lane.cursor == 10


@pytest.mark.parametrize(("chunks", "batch_size", "concurrency"), [(200, 20, 8), (95, 10, 16)])
def test_a_lane_costs_one_store_round_trip_per_batch(
    chunks: int, batch_size: int, concurrency: int
) -> None:
    settings = Settings(batch_size=batch_size, concurrency=concurrency, lanes=1)
    generator = FakeGenerator()
    service, store, run_id = _service(chunks, settings, generator)
    plan = service.plan(run_id)
    store.reset()
    progress = service.batch(run_id, plan.lanes[0], setup=plan.setup, attempt=plan.attempt)
    batches = -(-chunks // batch_size)
    assert progress.done and progress.new_chunks == chunks
    # Each batch's look-up rides on the write of the answers so far; the last answers are
    # written by one more round trip. Nothing else: no run, no settings, no separate look-up.
    assert store.calls == ["record_batch"] * (batches + 1)
    assert len(store.calls) / batches <= 1 + 1 / batches
    assert store.inner.get_run(run_id).processed_chunks == chunks
    assert max(generator.asked.values()) == 1


def test_without_the_plans_setup_a_call_reads_the_run_and_settings_once() -> None:
    settings = Settings(batch_size=10, concurrency=4, lanes=1)
    service, store, run_id = _service(50, settings, FakeGenerator())
    lane = service.plan(run_id).lanes[0]
    store.reset()
    assert service.batch(run_id, lane).done
    assert Counter(store.calls) == {"get_run": 1, "get_settings": 1, "record_batch": 6}


def test_store_round_trips_run_off_the_event_loop() -> None:
    """A write that waits for an LLM answer to arrive finishes only if the loop kept serving
    the calls in flight meanwhile."""
    settings = Settings(batch_size=10, concurrency=8, lanes=1)
    generator = FakeGenerator()
    service, store, run_id = _service(60, settings, generator)
    plan = service.plan(run_id)
    overlapped: list[bool] = []

    def wait_for_an_answer(_batch: BatchRecord) -> None:
        if generator.in_flight == 0:
            return
        before = generator.answers
        deadline = time.monotonic() + 5
        while generator.answers == before and time.monotonic() < deadline:
            time.sleep(0.001)
        overlapped.append(generator.answers > before)

    store.before_write = wait_for_an_answer
    store.reset()
    assert service.batch(run_id, plan.lanes[0], setup=plan.setup, attempt=plan.attempt).done
    assert threading.get_ident() not in store.threads
    assert overlapped and all(overlapped)


def test_a_failed_lane_call_keeps_every_answer_and_its_retry_asks_only_the_rest() -> None:
    settings = Settings(batch_size=10, concurrency=4, lanes=1)
    generator = FakeGenerator(fail_from=25)
    service, store, run_id = _service(60, settings, generator)
    plan = service.plan(run_id)
    lane = plan.lanes[0]
    with pytest.raises(GenerationError):
        service.batch(run_id, lane, setup=plan.setup, attempt=plan.attempt)
    # Every answer received before the error was raised is recorded.
    answered_first = set(generator.answered)
    assert answered_first and len(answered_first) < 60
    assert store.inner.processed_chunk_ids(run_id, list(generator.asked)) == answered_first
    generator.fail_from = None
    generator.asked.clear()
    # The state machine retries the call with the same input.
    assert _walk(service, run_id, lane, plan.setup).done
    assert not set(generator.asked) & answered_first
    assert max(generator.asked.values()) == 1
    assert store.inner.get_run(run_id).processed_chunks == 60


def test_resume_skips_every_processed_chunk_wherever_it_is() -> None:
    settings = Settings(batch_size=8, concurrency=4, lanes=1)
    generator = FakeGenerator()
    service, store, run_id = _service(64, settings, generator)
    plan = service.plan(run_id)
    # Chunks processed before, scattered: some batches whole, others in part.
    before = {f"chunk-{i:04d}" for i in [*range(0, 8), *range(10, 64, 3)]}
    store.inner.record_batch(
        BatchRecord(
            run_id=run_id,
            attempt=1,
            chunks=[ChunkQuestions(chunk_id=c, questions=[]) for c in before],
        )
    )
    assert _walk(service, run_id, plan.lanes[0], plan.setup).done
    assert not set(generator.asked) & before
    assert set(generator.asked) == {c.id for c in ListSource(64).chunks} - before
    assert store.inner.get_run(run_id).processed_chunks == 64


def test_a_lane_of_a_run_no_longer_generating_is_refused_before_any_llm_call() -> None:
    settings = Settings(batch_size=10, concurrency=4, lanes=1)
    generator = FakeGenerator()
    service, store, run_id = _service(30, settings, generator)
    plan = service.plan(run_id)
    store.inner.transition(run_id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED)
    with pytest.raises(InvalidTransitionError):
        service.batch(run_id, plan.lanes[0], setup=plan.setup, attempt=plan.attempt)
    assert not generator.asked


def test_the_handler_passes_the_setup_and_the_output_carries_it_on() -> None:
    from deepmem.local.functions import load_function

    settings = Settings(batch_size=10, concurrency=4, lanes=2)
    generator = FakeGenerator()
    service, store, run_id = _service(40, settings, generator)
    generate_batch = load_function("generate_batch")
    plan = generate_batch.handle(events.plan_input(run_id), service, None)
    store.reset()
    # What the Map's ItemSelector builds from the plan's output.
    event: dict[str, Any] = events.batch_input(run_id, lane_=plan["lanes"][0], setup=plan["setup"])
    while True:
        out = generate_batch.handle(event, service, None)
        assert out["setup"] == plan["setup"]
        if out["done"]:
            break
        event = events.batch_input(run_id, lane_=out["lane"], setup=out["setup"])
    assert store.calls[0] == "record_batch"
    assert set(store.calls) == {"record_batch"}


class OutageGenerator(FakeGenerator):
    """Every call fails as an LLM outage does once the adapter's retries are spent."""

    async def generate(
        self, chunk: Chunk, count: int, pacer: Pacer = UNPACED
    ) -> GeneratedQuestions:
        self.asked[chunk.id] += 1
        await asyncio.sleep(0.001)
        raise TransientGenerationError(f"LLM call for chunk {chunk.id} failed: HTTP 500")


def test_an_outage_spends_the_retry_budget_across_calls_then_stops_for_good() -> None:
    settings = Settings(batch_size=4, concurrency=2, lanes=1)
    generator = OutageGenerator()
    store = CountingStore(MemoryRunStore(settings))
    source = ListSource(40)
    service = GenerationService(
        store, lambda _dataset: source, lambda _settings: generator, max_failed_chunks=5
    )
    run_id = store.inner.create_run(DATASET, None).id
    plan = service.plan(run_id)
    lane = plan.lanes[0]
    errors: list[type[Exception]] = []
    for _ in range(4):  # the state machine's retries of the transient error
        try:
            service.batch(run_id, lane, setup=plan.setup)
        except Exception as exc:
            errors.append(type(exc))
    # 2 chunks in flight fail per call: 2, 4, then 6 >= 5 stops the run; the 4th call
    # finds the budget spent and asks the LLM nothing.
    assert errors == [
        TransientGenerationError,
        TransientGenerationError,
        RetryBudgetExhaustedError,
        RetryBudgetExhaustedError,
    ]
    assert sum(generator.asked.values()) == 6
    assert store.inner.get_run(run_id).failed_chunk_streak == 6


def test_finish_refuses_too_few_pairs_and_says_why() -> None:
    settings = Settings(batch_size=10, concurrency=4, lanes=1, questions_per_chunk=1)
    service, store, run_id = _service(4, settings, FakeGenerator())
    plan = service.plan(run_id)
    assert service.batch(run_id, plan.lanes[0], setup=plan.setup).done
    with pytest.raises(TooFewPairsError) as caught:
        service.finish(run_id)
    assert "4 pairs from 4 chunks, none of them rejected" in str(caught.value)
    assert f"deepmem delete {run_id}" in str(caught.value)
    assert store.inner.get_run(run_id).status is RunStatus.GENERATING


def test_a_plan_over_another_dataset_or_generator_is_refused() -> None:
    settings = Settings(batch_size=10, lanes=1)
    store = MemoryRunStore(settings)
    source = ListSource(12)
    kind = ["openai"]
    service = GenerationService(
        store,
        lambda _dataset: source,
        lambda _settings: FakeGenerator(),
        generator_choice=lambda s: GeneratorChoice(kind=kind[0], model=s.llm_model),
    )
    run_id = store.create_run(DATASET, None).id
    service.plan(run_id)
    recorded = store.get_run(run_id)
    assert (recorded.generator, recorded.llm_model) == ("openai", settings.llm_model)
    assert recorded.dataset_fingerprint == source.fingerprint()
    service.plan(run_id)  # the same dataset and generator: a proceed may go on
    kind[0] = "offline"
    with pytest.raises(RunSourceChangedError, match="the configured generator is offline"):
        service.plan(run_id)
    kind[0] = "openai"
    source.chunks.append(Chunk(id="chunk-new", text="New."))
    with pytest.raises(RunSourceChangedError, match="another version of dataset"):
        service.plan(run_id)
