"""Generation, the three actions the state machine calls: plan, batch (per lane), finish.

Resume is by chunk identity: a batch reads its lane's next index range, asks the store which
of those chunks this run already processed, and sends only the others to the generator. So a
retried or resumed batch costs one store lookup for what was done, never an LLM call, and the
cost of a batch is proportional to the batch, not to the corpus.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict

from deepmem.domain.chunks import Chunk, Lane, split_into_lanes
from deepmem.domain.errors import (
    DatasetError,
    InvalidTransitionError,
)
from deepmem.domain.models import BatchRecord, ChunkQuestions, Settings, TrainingRun
from deepmem.domain.status import RunStatus
from deepmem.ports import ChunkSource, GeneratedQuestions, QuestionGenerator, RunStore

logger = Logger(child=True)

#: Stop taking new batches when less than this is left of the invocation (milliseconds).
MIN_REMAINING_MS = 20_000


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: UUID
    attempt: int
    total_chunks: int
    lanes: list[Lane]
    max_concurrency: int


class LaneProgress(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: UUID
    attempt: int
    lane: Lane
    done: bool
    new_chunks: int
    new_pairs: int
    llm_calls: int
    retries: int
    tokens_used: int


@dataclass
class _Tally:
    new_chunks: int = 0
    new_pairs: int = 0
    llm_calls: int = 0
    retries: int = 0
    tokens_used: int = 0


class GenerationService:
    def __init__(
        self,
        store: RunStore,
        chunk_source_for: Callable[[str], ChunkSource],
        generator_for: Callable[[Settings], QuestionGenerator],
    ) -> None:
        self._store = store
        self._chunk_source_for = chunk_source_for
        self._generator_for = generator_for

    def plan(self, run_id: UUID) -> Plan:
        run = self._generating_run(run_id)
        settings = self._store.get_settings()
        available = self._chunk_source_for(run.dataset).count()
        if available == 0:
            raise DatasetError(f"dataset {run.dataset} has no chunks to generate questions for")
        total = min(available, settings.max_chunks_per_run or available)
        self._store.set_total_chunks(run_id, total)
        lanes = split_into_lanes(total, settings.lanes)
        logger.info(
            "planned generation",
            extra={"total_chunks": total, "lanes": len(lanes), "available_chunks": available},
        )
        return Plan(
            run_id=run_id,
            attempt=run.attempt,
            total_chunks=total,
            lanes=lanes,
            max_concurrency=settings.lanes,
        )

    def batch(
        self,
        run_id: UUID,
        lane: Lane,
        remaining_ms: Callable[[], int] | None = None,
    ) -> LaneProgress:
        """Walk the lane until it is done or the invocation's time runs low."""
        return asyncio.run(self._walk(run_id, lane, remaining_ms))

    async def _walk(
        self,
        run_id: UUID,
        lane: Lane,
        remaining_ms: Callable[[], int] | None,
    ) -> LaneProgress:
        # One event loop per invocation, and the generator (with its HTTP client) made inside
        # it: an async client must not outlive the loop it was used on.
        run = self._generating_run(run_id)
        settings = self._store.get_settings()
        source = self._chunk_source_for(run.dataset)
        generator = self._generator_for(settings)
        stream = _ChunkStream(self._store, run, generator, settings)
        cursor = lane.cursor
        try:
            while cursor < lane.stop and not stream.failures:
                if remaining_ms is not None and remaining_ms() < stream.margin_ms():
                    break
                stop = min(cursor + settings.batch_size, lane.stop)
                chunks = source.read(cursor, stop)
                if len(chunks) != stop - cursor:
                    raise DatasetError(
                        f"dataset {run.dataset} returned {len(chunks)} chunks for "
                        f"[{cursor}, {stop}): did it change during the run?"
                    )
                done = self._store.processed_chunk_ids(run.id, [c.id for c in chunks])
                for chunk in chunks:
                    if chunk.id not in done:
                        await stream.submit(chunk)
                cursor = stop
            await stream.drain()
        finally:
            await stream.close()
        stream.raise_failure()
        lane = lane.model_copy(update={"cursor": cursor})
        logger.info(
            "lane progress",
            extra={
                "lane": lane.lane,
                "cursor": lane.cursor,
                "stop": lane.stop,
                "concurrency_limit": round(stream.slots.limit, 1),
                **stream.tally.__dict__,
            },
        )
        return LaneProgress(
            run_id=run_id,
            attempt=stream.run.attempt,
            lane=lane,
            done=lane.done,
            **stream.tally.__dict__,
        )

    def finish(self, run_id: UUID) -> TrainingRun:
        """Every chunk processed → `generated` (the database refuses it otherwise)."""
        moved = self._store.transition(run_id, RunStatus.GENERATING, RunStatus.GENERATED)
        if moved is not None:
            logger.info(
                "generation finished",
                extra={"pair_count": moved.pair_count, "processed_chunks": moved.processed_chunks},
            )
            return moved
        run = self._store.get_run(run_id)
        if run.status == RunStatus.GENERATED:  # a retried finish
            return run
        raise InvalidTransitionError(run_id, run.status, RunStatus.GENERATED)

    def _generating_run(self, run_id: UUID) -> TrainingRun:
        run = self._store.get_run(run_id)
        if run.status != RunStatus.GENERATING:
            raise InvalidTransitionError(run_id, run.status, RunStatus.GENERATING)
        return run


class AdaptiveSlots:
    """At most `limit` chunks in flight. The limit backs off when the LLM pushes back (an
    answer that needed retries: 429, 5xx, a timeout) and creeps back up while it does not:
    additive increase, multiplicative decrease, at most one cut per round trip (calls sent
    before a cut were sent under the old limit). So a rate-limited endpoint is driven at its
    rate, not hammered into Retry-After waits."""

    def __init__(self, maximum: int, backoff: float = 0.75) -> None:
        self.maximum = maximum
        self.limit = float(maximum)
        self.active = 0
        self._backoff = backoff
        self._last_cut = float("-inf")
        self._changed = asyncio.Condition()

    async def acquire(self) -> float:
        """Wait for a slot; return when the call starts (to pass back to `release`)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.active < max(1, int(self.limit)))
            self.active += 1
        return time.monotonic()

    async def release(self, started: float, pushed_back: bool | None) -> None:
        """`pushed_back`: True when the call needed retries, False when it did not, None when
        it says nothing about the endpoint's load (it failed, or never ran)."""
        async with self._changed:
            self.active -= 1
            if pushed_back and started >= self._last_cut:
                self.limit = max(1.0, self.limit * self._backoff)
                self._last_cut = time.monotonic()
            elif pushed_back is False:
                self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
            self._changed.notify_all()


class _ChunkStream:
    """Chunks go to the generator as a stream: a new one starts whenever a slot frees
    (`concurrency` of them, fewer while the LLM pushes back: `AdaptiveSlots`), across batch
    boundaries, so one slow answer never idles the other slots. Answers are recorded every
    `batch_size` (one transaction each); on a failure no new chunk starts, the ones in flight
    finish, and every answer is recorded before the error is raised, so resume never pays for
    a chunk twice."""

    def __init__(
        self,
        store: RunStore,
        run: TrainingRun,
        generator: QuestionGenerator,
        settings: Settings,
    ) -> None:
        self.run = run
        self.tally = _Tally()
        self.failures: list[Exception] = []
        self._store = store
        self._generator = generator
        self._count = settings.questions_per_chunk
        self._record_every = settings.batch_size
        self.slots = AdaptiveSlots(settings.concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._answered: list[GeneratedQuestions] = []
        self._slowest_ms = 0.0

    def margin_ms(self) -> float:
        """Time to keep in hand before starting more: the in-flight chunks must finish."""
        return max(MIN_REMAINING_MS, 2 * self._slowest_ms)

    async def submit(self, chunk: Chunk) -> None:
        started = await self.slots.acquire()
        if self.failures:
            await self.slots.release(started, None)
            return
        task = asyncio.create_task(self._generate(chunk, started))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        if len(self._answered) >= self._record_every:
            self._record()

    async def drain(self) -> None:
        while self._in_flight:
            await asyncio.wait(set(self._in_flight))
        self._record()

    async def close(self) -> None:
        for task in self._in_flight:
            task.cancel()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        close = getattr(self._generator, "aclose", None)
        if close is not None:
            await close()

    def raise_failure(self) -> None:
        if not self.failures:
            return
        first = self.failures[0]
        logger.warning(
            "chunks failed",
            extra={"failed": len(self.failures), "error": str(first), **self.tally.__dict__},
        )
        raise first

    async def _generate(self, chunk: Chunk, started: float) -> None:
        pushed_back: bool | None = None
        try:
            answer = await self._generator.generate(chunk, self._count)
            pushed_back = answer.retries > 0
            # Appended after the await: `_record` swaps the list meanwhile.
            self._answered.append(answer)
        except Exception as exc:
            self.failures.append(exc)
        finally:
            self._slowest_ms = max(self._slowest_ms, (time.monotonic() - started) * 1000)
            await self.slots.release(started, pushed_back)

    def _record(self) -> None:
        if not self._answered:
            return
        answered, self._answered = self._answered, []
        outcome = self._store.record_batch(
            BatchRecord(
                run_id=self.run.id,
                chunks=[
                    ChunkQuestions(chunk_id=r.chunk_id, questions=r.questions) for r in answered
                ],
                llm_calls=sum(r.llm_calls for r in answered),
                tokens_used=sum(r.tokens_used for r in answered),
            )
        )
        self.run = outcome.run
        self.tally.new_chunks += outcome.new_chunks
        self.tally.new_pairs += outcome.new_pairs
        self.tally.llm_calls += sum(r.llm_calls for r in answered)
        self.tally.retries += sum(r.retries for r in answered)
        self.tally.tokens_used += sum(r.tokens_used for r in answered)
