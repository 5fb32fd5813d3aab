"""Generation, the three actions the state machine calls: plan, batch (per lane), finish.

Resume is by chunk identity: a lane reads its next index range, asks the store which of those
chunks this run already processed, and sends only the others to the generator. That question
rides on the write of the answers so far (`BatchRecord.look_up`), one batch ahead of the
chunks being sent, so a lane costs one store round trip per batch, and every round trip runs
off the event loop: the LLM calls in flight never wait for the database. What a lane needs
(the dataset, the settings) comes from the plan, through the state machine, so a lane call
reads nothing before its first batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from uuid import UUID

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict

from deepmem.domain.chunks import Lane, split_into_lanes
from deepmem.domain.errors import (
    DatasetError,
    RunSourceChangedError,
    StaleWorkerError,
    TooFewPairsError,
)
from deepmem.domain.models import Settings, TrainingRun
from deepmem.domain.provenance import (
    UNNAMED_GENERATOR,
    GeneratorChoice,
    RunSource,
    source_mismatch,
    too_few_pairs,
)
from deepmem.domain.status import RunStatus
from deepmem.ports import ChunkSource, QuestionGenerator, RunStore
from deepmem.services.chunk_stream import ChunkStream, NextBatch

logger = Logger(child=True)

#: Chunks failing in a row (each after the LLM adapter's own retries) that stop a run.
DEFAULT_MAX_FAILED_CHUNKS = 8


class LaneSetup(BaseModel):
    """What every call of a lane needs, decided once by `plan` and carried by the state machine
    to each lane and from each call to the next. It cannot go stale during the execution: the
    dataset is the run's, and the database refuses a settings change while a run generates."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    settings: Settings


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: UUID
    attempt: int
    total_chunks: int
    lanes: list[Lane]
    max_concurrency: int
    setup: LaneSetup


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
    setup: LaneSetup


class GenerationService:
    def __init__(
        self,
        store: RunStore,
        chunk_source_for: Callable[[str], ChunkSource],
        generator_for: Callable[[Settings], QuestionGenerator],
        *,
        generator_choice: Callable[[Settings], GeneratorChoice] | None = None,
        embedding_model_of: Callable[[str], str | None] | None = None,
        max_failed_chunks: int = DEFAULT_MAX_FAILED_CHUNKS,
    ) -> None:
        self._store = store
        self._chunk_source_for = chunk_source_for
        self._generator_for = generator_for
        self._generator_choice = generator_choice or _unnamed_generator
        self._embedding_model_of = embedding_model_of or _nothing_recorded
        self._max_failed_chunks = max_failed_chunks

    def plan(self, run_id: UUID, attempt: int | None = None) -> Plan:
        """`attempt`: the execution's (the state machine always gives it); None = the run's
        current one, for a caller with no execution."""
        run = self._generating_run(run_id, attempt)
        settings = self._store.get_settings()
        source = self._chunk_source_for(run.dataset)
        forget = getattr(source, "close", None)
        if forget is not None:
            forget()  # a warm process kept it open: the plan must see the dataset as it is now
        available = source.count()
        if available == 0:
            raise DatasetError(f"dataset {run.dataset} has no chunks to generate questions for")
        self._record_source(run, settings, source)
        total = min(available, settings.max_chunks_per_run or available)
        self._store.set_total_chunks(run_id, total, attempt=run.attempt)
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
            setup=LaneSetup(dataset=run.dataset, settings=settings),
        )

    def batch(
        self,
        run_id: UUID,
        lane: Lane,
        remaining_ms: Callable[[], int] | None = None,
        setup: LaneSetup | None = None,
        attempt: int | None = None,
    ) -> LaneProgress:
        """Walk the lane until it is done or the invocation's time runs low. Without the
        plan's `setup` (a caller that has no plan at hand), the run and the settings are read
        first, once; without `attempt` (the execution's), the run's current one. Every write
        carries the attempt: a refused one (StaleWorkerError) ends the walk at once."""
        if setup is None or attempt is None:
            run = self._generating_run(run_id, attempt)
            attempt = run.attempt
            if setup is None:
                setup = LaneSetup(dataset=run.dataset, settings=self._store.get_settings())
        return asyncio.run(self._walk(run_id, attempt, lane, setup, remaining_ms))

    async def _walk(
        self,
        run_id: UUID,
        attempt: int,
        lane: Lane,
        setup: LaneSetup,
        remaining_ms: Callable[[], int] | None,
    ) -> LaneProgress:
        # One event loop per invocation, and the generator (with its HTTP client) made inside
        # it: an async client must not outlive the loop it was used on.
        source = self._chunk_source_for(setup.dataset)
        generator = self._generator_for(setup.settings)
        stream = ChunkStream(
            self._store,
            run_id,
            attempt,
            generator,
            setup.settings,
            max_failed_chunks=self._max_failed_chunks,
        )
        stream.start_heartbeat()
        try:
            cursor = await self._feed(stream, source, lane, setup, remaining_ms)
            await stream.drain()
            await stream.count_failures()
        finally:
            await stream.close()
        stream.raise_failure()
        assert stream.run is not None  # drain made a round trip, or raised
        lane = lane.model_copy(update={"cursor": cursor})
        logger.info(
            "lane progress",
            extra={
                "lane": lane.lane,
                "cursor": lane.cursor,
                "stop": lane.stop,
                "concurrency_limit": round(stream.slots.limit, 1),
                "store_round_trips": stream.round_trips,
                **stream.tally.__dict__,
            },
        )
        return LaneProgress(
            run_id=run_id,
            attempt=attempt,
            lane=lane,
            done=lane.done,
            setup=setup,
            **stream.tally.__dict__,
        )

    async def _feed(
        self,
        stream: ChunkStream,
        source: ChunkSource,
        lane: Lane,
        setup: LaneSetup,
        remaining_ms: Callable[[], int] | None,
    ) -> int:
        """Send the lane's unprocessed chunks to the stream, batch by batch; return the cursor
        (every chunk before it was processed, or is in flight). The next batch is read and
        looked up while this one is sent, so the stream never waits for the store between
        batches unless the store is slower than a batch of LLM calls."""
        size = setup.settings.batch_size
        dataset = setup.dataset
        cursor = lane.cursor
        ahead: asyncio.Task[NextBatch | None] | None = None
        if cursor < lane.stop:
            ahead = asyncio.create_task(
                stream.look_ahead(source, dataset, cursor, min(cursor + size, lane.stop))
            )
        try:
            while ahead is not None:
                batch = await ahead
                ahead = None
                if batch is None or stream.stopping or stream.over_budget():
                    break
                if remaining_ms is not None and remaining_ms() < stream.margin_ms():
                    break
                if batch.stop < lane.stop:
                    ahead = asyncio.create_task(
                        stream.look_ahead(
                            source, dataset, batch.stop, min(batch.stop + size, lane.stop)
                        )
                    )
                for chunk in batch.unprocessed:
                    if stream.stopping:
                        break
                    await stream.submit(chunk)
                if stream.stopping:
                    break
                cursor = batch.stop
        finally:
            if ahead is not None:  # its round trip carries answers: let it land
                await asyncio.wait({ahead})
        return cursor

    def _record_source(self, run: TrainingRun, settings: Settings, source: ChunkSource) -> None:
        """Record what the pairs come from on the run's first plan; refuse any later plan (a
        proceed) over another dataset or generator: its pairs would mix both."""
        choice = self._generator_choice(settings)
        wanted = RunSource(
            dataset_fingerprint=source.fingerprint(),
            generator=str(choice.kind),
            llm_model=choice.model,
            embedding_model=self._embedding_model_of(run.dataset) or settings.embedding_model,
        )
        recorded = self._store.set_run_source(run.id, wanted, attempt=run.attempt)
        mismatch = source_mismatch(recorded, wanted)
        if mismatch is not None:
            raise RunSourceChangedError(run.id, run.status, mismatch)

    def finish(self, run_id: UUID, attempt: int | None = None) -> TrainingRun:
        """Every chunk processed → `generated` (the database refuses it otherwise), by
        compare-and-set at the execution's `attempt` (StaleWorkerError for another attempt),
        when the run holds the pairs training needs; TooFewPairsError (the run fails, and stays
        resumable: a proceed asks about its rejected chunks again) otherwise."""
        run = self._store.get_run(run_id)
        attempt = attempt if attempt is not None else run.attempt
        if run.status == RunStatus.GENERATING and run.processed_chunks >= run.total_chunks:
            reason = too_few_pairs(run)
            if reason is not None:
                raise TooFewPairsError(reason)
        moved = self._store.transition(
            run_id, RunStatus.GENERATING, RunStatus.GENERATED, attempt=attempt
        )
        if moved is not None:
            logger.info(
                "generation finished",
                extra={"pair_count": moved.pair_count, "processed_chunks": moved.processed_chunks},
            )
            return moved
        run = self._store.get_run(run_id)
        if run.status == RunStatus.GENERATED and run.attempt == attempt:  # a retried finish
            return run
        raise StaleWorkerError(run_id, run.status, run.attempt, attempt)

    def _generating_run(self, run_id: UUID, attempt: int | None) -> TrainingRun:
        run = self._store.get_run(run_id)
        if run.status != RunStatus.GENERATING or attempt not in (None, run.attempt):
            raise StaleWorkerError(run_id, run.status, run.attempt, attempt or run.attempt)
        return run


def _unnamed_generator(settings: Settings) -> GeneratorChoice:
    return GeneratorChoice(kind=UNNAMED_GENERATOR)


def _nothing_recorded(dataset: str) -> str | None:
    return None
