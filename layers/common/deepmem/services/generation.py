"""Generation, the three actions the state machine calls: plan, batch (per lane), finish.

Resume is by chunk identity: a lane reads its next index range, asks the store which of those
chunks this run already processed, and sends only the others to the generator. That question
rides on the write of the answers so far (`BatchRecord.look_up`), one batch ahead of the
chunks being sent, so a lane costs one store round trip per batch, and every round trip runs
off the event loop: the LLM calls in flight never wait for the database. What a lane needs
(the dataset, the settings) comes from the plan, through the state machine, so a lane call
reads nothing before its first batch.

Handover: the plan gives every lane a budget (batch calls, a deadline) from
`deepmem.domain.handover`; a lane over it stops with `handover` set, and `finish` then answers
with the next execution of the attempt (its segment, the lanes not done) instead of moving the
run, so one execution stays far inside Step Functions' 24 h and 25,000 events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
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
from deepmem.domain.handover import (
    GenerationLimits,
    HandoverBudget,
    RunEstimate,
    budget_for,
    estimate_generation,
    require_finishable,
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
    handover: HandoverBudget | None = None  # None: an older plan, no budget


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: UUID
    attempt: int
    segment: int = 0
    total_chunks: int
    lanes: list[Lane]
    max_concurrency: int
    setup: LaneSetup
    estimate: RunEstimate | None = None  # made by the first execution of an attempt


class Handover(BaseModel):
    """`finish` of an execution whose lanes are not all done: what the next one continues."""

    model_config = ConfigDict(frozen=True)

    run_id: UUID
    attempt: int
    segment: int
    lanes: list[Lane]


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
    handover: bool = False


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
        limits: GenerationLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._chunk_source_for = chunk_source_for
        self._generator_for = generator_for
        self._generator_choice = generator_choice or _unnamed_generator
        self._embedding_model_of = embedding_model_of or _nothing_recorded
        self._max_failed_chunks = max_failed_chunks
        self._limits = limits or GenerationLimits()
        self._clock = clock

    def plan(
        self,
        run_id: UUID,
        attempt: int | None = None,
        segment: int = 0,
        lanes: Sequence[Lane] | None = None,
    ) -> Plan:
        """`attempt`: the execution's (the state machine always gives it); None = the run's
        current one, for a caller with no execution. The first execution of an attempt counts
        the chunks, records the run's source, estimates the run (recorded on it;
        UnfinishableRunError when it cannot finish) and splits the lanes; a later segment
        continues the lanes its predecessor handed over."""
        run = self._generating_run(run_id, attempt)
        settings = self._store.get_settings()
        estimate = None
        if lanes is None:
            total = self._count(run, settings)
            estimate = estimate_generation(total, settings, self._limits)
            self._store.set_total_chunks(
                run_id, total, attempt=run.attempt, estimate=estimate.model_dump(mode="json")
            )
            require_finishable(estimate)
            lanes = split_into_lanes(total, settings.lanes)
        else:
            total = run.total_chunks
            lanes = [lane.model_copy(update={"calls": 0}) for lane in lanes if not lane.done]
        logger.info(
            "planned generation",
            extra={"total_chunks": total, "lanes": len(lanes), "segment": segment},
        )
        return Plan(
            run_id=run_id,
            attempt=run.attempt,
            segment=segment,
            total_chunks=total,
            lanes=list(lanes),
            max_concurrency=settings.lanes,
            setup=LaneSetup(
                dataset=run.dataset,
                settings=settings,
                handover=budget_for(len(lanes), self._limits, self._clock()),
            ),
            estimate=estimate,
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
        lane = lane.model_copy(update={"cursor": cursor, "calls": lane.calls + 1})
        budget = setup.handover
        handover = (
            budget is not None
            and not lane.done
            and (lane.calls >= budget.calls_per_lane or self._clock() >= budget.deadline)
        )
        logger.info(
            "lane progress",
            extra={
                "lane": lane.lane,
                "cursor": lane.cursor,
                "stop": lane.stop,
                "llm_pace_per_s": round(stream.pacer.rate, 1) if stream.pacer.rate else None,
                "llm_refusals": stream.pacer.refusals,
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
            handover=handover,
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
        deadline = setup.handover.deadline if setup.handover else None
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
                if deadline is not None and cursor > lane.cursor and self._clock() >= deadline:
                    break  # the execution hands over; at least one batch was sent
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

    def _count(self, run: TrainingRun, settings: Settings) -> int:
        """(Re)open the dataset, record what the pairs come from, and cap the count."""
        source = self._chunk_source_for(run.dataset)
        forget = getattr(source, "close", None)
        if forget is not None:
            forget()  # a warm process kept it open: the plan must see the dataset as it is now
        available = source.count()
        if available == 0:
            raise DatasetError(f"dataset {run.dataset} has no chunks to generate questions for")
        self._record_source(run, settings, source)
        return min(available, settings.max_chunks_per_run or available)

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

    def finish(
        self,
        run_id: UUID,
        attempt: int | None = None,
        lanes: Sequence[Lane] | None = None,
        segment: int = 0,
    ) -> TrainingRun | Handover:
        """A lane not done (it handed over): the next segment continues it (a Handover).
        Every lane done: every chunk processed → `generated` (the database refuses it
        otherwise), by compare-and-set at the execution's `attempt` (StaleWorkerError for
        another attempt), when the run holds the pairs training needs; TooFewPairsError (the
        run fails, and stays resumable: a proceed asks about its rejected chunks again)
        otherwise."""
        undone = [lane for lane in lanes or () if not lane.done]
        if undone:
            run = self._generating_run(run_id, attempt)
            logger.info(
                "generation hands over", extra={"segment": segment + 1, "lanes": len(undone)}
            )
            return Handover(run_id=run_id, attempt=run.attempt, segment=segment + 1, lanes=undone)
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
