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
from deepmem.domain.errors import DatasetError, StaleWorkerError
from deepmem.domain.models import Settings, TrainingRun
from deepmem.domain.status import RunStatus
from deepmem.ports import ChunkSource, QuestionGenerator, RunStore
from deepmem.services.chunk_stream import ChunkStream, NextBatch

logger = Logger(child=True)


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
    ) -> None:
        self._store = store
        self._chunk_source_for = chunk_source_for
        self._generator_for = generator_for

    def plan(self, run_id: UUID, attempt: int | None = None) -> Plan:
        """`attempt`: the execution's (the state machine always gives it); None = the run's
        current one, for a caller with no execution."""
        run = self._generating_run(run_id, attempt)
        settings = self._store.get_settings()
        available = self._chunk_source_for(run.dataset).count()
        if available == 0:
            raise DatasetError(f"dataset {run.dataset} has no chunks to generate questions for")
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
        stream = ChunkStream(self._store, run_id, attempt, generator, setup.settings)
        stream.start_heartbeat()
        try:
            cursor = await self._feed(stream, source, lane, setup, remaining_ms)
            await stream.drain()
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
                if batch is None or stream.stopping:
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

    def finish(self, run_id: UUID, attempt: int | None = None) -> TrainingRun:
        """Every chunk processed → `generated` (the database refuses it otherwise), by
        compare-and-set at the execution's `attempt`; StaleWorkerError for another attempt."""
        attempt = attempt if attempt is not None else self._store.get_run(run_id).attempt
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
