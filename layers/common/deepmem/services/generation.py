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
    GenerationError,
    InvalidTransitionError,
)
from deepmem.domain.models import BatchRecord, ChunkQuestions, Settings, TrainingRun
from deepmem.domain.status import RunStatus
from deepmem.ports import ChunkSource, GeneratedQuestions, QuestionGenerator, RunStore

logger = Logger(service="deepmem", child=True)

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
        on_progress: Callable[[TrainingRun], None] | None = None,
    ) -> LaneProgress:
        """Walk the lane batch by batch until it is done or the invocation's time runs low."""
        return asyncio.run(self._walk(run_id, lane, remaining_ms, on_progress))

    async def _walk(
        self,
        run_id: UUID,
        lane: Lane,
        remaining_ms: Callable[[], int] | None,
        on_progress: Callable[[TrainingRun], None] | None,
    ) -> LaneProgress:
        # One event loop per invocation, and the generator (with its HTTP client) made inside
        # it: an async client must not outlive the loop it was used on.
        run = self._generating_run(run_id)
        settings = self._store.get_settings()
        source = self._chunk_source_for(run.dataset)
        generator = self._generator_for(settings)
        tally = _Tally()
        slowest_ms = 0.0
        while not lane.done:
            started = time.monotonic()
            stop = min(lane.cursor + settings.batch_size, lane.stop)
            chunks = source.read(lane.cursor, stop)
            if len(chunks) != stop - lane.cursor:
                raise DatasetError(
                    f"dataset {run.dataset} returned {len(chunks)} chunks for "
                    f"[{lane.cursor}, {stop}): did it change during the run?"
                )
            run = await self._process(run, chunks, generator, settings, tally)
            if on_progress is not None:
                on_progress(run)
            lane = lane.model_copy(update={"cursor": stop})
            slowest_ms = max(slowest_ms, (time.monotonic() - started) * 1000)
            if remaining_ms is not None and remaining_ms() < max(MIN_REMAINING_MS, 2 * slowest_ms):
                break
        logger.info(
            "lane progress",
            extra={"lane": lane.lane, "cursor": lane.cursor, "stop": lane.stop, **tally.__dict__},
        )
        return LaneProgress(
            run_id=run_id,
            attempt=run.attempt,
            lane=lane,
            done=lane.done,
            **tally.__dict__,
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

    async def _process(
        self,
        run: TrainingRun,
        chunks: list[Chunk],
        generator: QuestionGenerator,
        settings: Settings,
        tally: _Tally,
    ) -> TrainingRun:
        done = self._store.processed_chunk_ids(run.id, [c.id for c in chunks])
        todo = [c for c in chunks if c.id not in done]
        if not todo:
            return run
        results = await _generate_all(
            generator, todo, settings.questions_per_chunk, settings.concurrency
        )
        succeeded = [r for r in results if isinstance(r, GeneratedQuestions)]
        failures = [r for r in results if isinstance(r, BaseException)]
        if succeeded:
            # What succeeded is kept even when a sibling failed: resume won't pay for it twice.
            outcome = self._store.record_batch(
                BatchRecord(
                    run_id=run.id,
                    chunks=[
                        ChunkQuestions(chunk_id=r.chunk_id, questions=r.questions)
                        for r in succeeded
                    ],
                    llm_calls=sum(r.llm_calls for r in succeeded),
                    tokens_used=sum(r.tokens_used for r in succeeded),
                )
            )
            run = outcome.run
            tally.new_chunks += outcome.new_chunks
            tally.new_pairs += outcome.new_pairs
            tally.llm_calls += sum(r.llm_calls for r in succeeded)
            tally.retries += sum(r.retries for r in succeeded)
            tally.tokens_used += sum(r.tokens_used for r in succeeded)
        if failures:
            first = failures[0]
            logger.warning(
                "chunks failed in batch",
                extra={"failed": len(failures), "recorded": len(succeeded), "error": str(first)},
            )
            if isinstance(first, Exception):
                raise first
            raise GenerationError(str(first))
        return run


async def _generate_all(
    generator: QuestionGenerator, chunks: list[Chunk], count: int, concurrency: int
) -> list[GeneratedQuestions | BaseException]:
    gate = asyncio.Semaphore(concurrency)

    async def one(chunk: Chunk) -> GeneratedQuestions:
        async with gate:
            return await generator.generate(chunk, count)

    return await asyncio.gather(*(one(c) for c in chunks), return_exceptions=True)
