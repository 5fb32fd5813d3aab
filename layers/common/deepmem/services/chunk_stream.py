"""A lane's chunks streamed through the question generator: at most `concurrency` in flight,
every LLM call (retries too) at the pace the endpoint admits (`pacing.LanePacer`), answers
recorded every `batch_size` in one store round trip that also looks up which of the next chunks
are already processed, every store call off the event loop. Used by `GenerationService.batch`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from uuid import UUID

from aws_lambda_powertools import Logger

from deepmem.domain.chunks import Chunk
from deepmem.domain.errors import (
    DatasetError,
    RetryBudgetExhaustedError,
    StaleWorkerError,
    TransientGenerationError,
)
from deepmem.domain.models import (
    BatchOutcome,
    BatchRecord,
    ChunkQuestions,
    Settings,
    TrainingRun,
)
from deepmem.ports import ChunkSource, GeneratedQuestions, QuestionGenerator, RunStore
from deepmem.services.pacing import LanePacer

logger = Logger(child=True)

#: Stop taking new batches when less than this is left of the invocation (milliseconds).
MIN_REMAINING_MS = 20_000

#: A lane with no round trip for this long makes one (writing the answers so far): a cancel or a
#: new attempt is learned within it even while every slot waits on a slow LLM (seconds).
HEARTBEAT_S = 2.0


@dataclass
class Tally:
    new_chunks: int = 0
    new_pairs: int = 0
    llm_calls: int = 0
    retries: int = 0
    tokens_used: int = 0


@dataclass(frozen=True)
class NextBatch:
    stop: int
    unprocessed: list[Chunk]


class ChunkStream:
    """Chunks go to the generator as a stream: a new one starts whenever a slot frees
    (`concurrency` of them), across batch boundaries, so one slow answer never idles the other
    slots. Every LLM call of every chunk, retries included, waits for a turn from the lane's
    one pacer, which learns the endpoint's rate from its 429s as they happen: a rate-limited
    endpoint is driven just under its rate, not into Retry-After waits.

    The answers received so far are written by the next round trip to the store, which is the
    look-up of the lane's next batch (one transaction each, one in flight at a time so the
    counters move in order, each in a worker thread so the loop keeps serving the LLM calls).
    On any failure no new chunk starts, the ones in flight finish, and every answer is written
    before the error is raised, so resume never pays for a chunk twice.

    Every round trip carries the worker's attempt. A run cancelled (or failed) in this attempt
    still records it and answers `stop`: no new chunk starts, the ones in flight finish and are
    recorded, then StaleWorkerError ends the lane. A refused round trip (the run moved to
    another attempt or phase: nothing recorded) cancels the chunks in flight too, so no LLM
    call is made after the refusal."""

    def __init__(
        self,
        store: RunStore,
        run_id: UUID,
        attempt: int,
        generator: QuestionGenerator,
        settings: Settings,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        max_failed_chunks: int = 8,
    ) -> None:
        self.run: TrainingRun | None = None
        self.tally = Tally()
        self.failures: list[Exception] = []
        self.failed_chunks = 0
        self.max_failed_chunks = max_failed_chunks
        self.round_trips = 0
        self._store = store
        self._run_id = run_id
        self._attempt = attempt
        self._generator = generator
        self._count = settings.questions_per_chunk
        self.pacer = LanePacer(settings.concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._answered: list[GeneratedQuestions] = []
        self._writing = asyncio.Lock()
        self._slowest_ms = 0.0
        # Set in the store's thread the moment a round trip says stop or is refused, so no
        # chunk starts after that answer even before the loop reads it.
        self._stopped = False
        self._heartbeat_s = heartbeat_s
        self._last_trip = time.monotonic()
        self._heartbeat: asyncio.Task[None] | None = None

    @property
    def stopping(self) -> bool:
        """No new chunk may start: a failure, a stop or a refusal."""
        return self._stopped or bool(self.failures)

    def margin_ms(self) -> float:
        """Time to keep in hand before starting more: the in-flight chunks must finish."""
        return max(MIN_REMAINING_MS, 2 * self._slowest_ms)

    async def look_ahead(
        self, source: ChunkSource, dataset: str, start: int, stop: int
    ) -> NextBatch | None:
        """Read [start, stop) and learn which of its chunks are processed, in the round trip
        that writes the answers so far. None on a failure (kept in `failures`)."""
        try:
            chunks = await asyncio.to_thread(source.read, start, stop)
            if len(chunks) != stop - start:
                raise DatasetError(
                    f"dataset {dataset} returned {len(chunks)} chunks for "
                    f"[{start}, {stop}): did it change during the run?"
                )
            processed = await self._write([c.id for c in chunks])
        except Exception as exc:
            self.failures.append(exc)
            return None
        return NextBatch(stop, [c for c in chunks if c.id not in processed])

    async def submit(self, chunk: Chunk) -> None:
        await self.pacer.enter()
        if self.stopping:
            self.pacer.leave()
            return
        task = asyncio.create_task(self._generate(chunk, time.monotonic()))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def drain(self) -> None:
        """Let the chunks in flight finish and write their answers."""
        while self._in_flight:
            await asyncio.wait(set(self._in_flight))
        try:
            await self._write([])
        except Exception as exc:
            self.failures.append(exc)

    def start_heartbeat(self) -> None:
        self._heartbeat = asyncio.create_task(self._beat())

    async def _beat(self) -> None:
        while not self.stopping:
            await asyncio.sleep(max(0.0, self._last_trip + self._heartbeat_s - time.monotonic()))
            if time.monotonic() - self._last_trip < self._heartbeat_s or self.stopping:
                continue
            try:
                await self._write([], beat=True)
            except Exception as exc:
                self.failures.append(exc)

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.wait({self._heartbeat})
        for task in self._in_flight:
            task.cancel()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        close = getattr(self._generator, "aclose", None)
        if close is not None:
            await close()

    def over_budget(self) -> bool:
        """The run's streak of failed chunks (as of the last round trip) is at the budget:
        another lane stopped it, or an earlier invocation of this one."""
        if self.run is None or self.run.failed_chunk_streak < self.max_failed_chunks:
            return False
        self.failures.insert(0, self._budget_error(self.run.failed_chunk_streak, None))
        return True

    async def count_failures(self) -> None:
        """Add this invocation's failed chunks to the run's streak; at the budget, the first
        failure becomes RetryBudgetExhaustedError (not retried: the run stops)."""
        if not self.failed_chunks:
            return
        try:
            streak = await asyncio.to_thread(
                self._store.record_chunk_failures, self._run_id, self.failed_chunks, self._attempt
            )
        except Exception as exc:
            self.failures.append(exc)
            return
        if streak >= self.max_failed_chunks:
            self.failures.insert(0, self._budget_error(streak, self.failures[0]))

    def _budget_error(self, streak: int, last: Exception | None) -> RetryBudgetExhaustedError:
        error = RetryBudgetExhaustedError(
            f"{streak} chunks in a row failed after all their retries (the budget is "
            f"{self.max_failed_chunks}, DEEPMEM_MAX_FAILED_CHUNKS): generation stopped"
            + (f"; the last error: {last}" if last is not None else "")
            + ". Proceed the run once the LLM answers again."
        )
        error.__cause__ = last
        return error

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
        try:
            if self._stopped:  # the answer came while this task waited for the loop
                return
            answer = await self._generator.generate(chunk, self._count, self.pacer)
            # Appended after the await: `_write` swaps the list meanwhile.
            self._answered.append(answer)
        except Exception as exc:
            if isinstance(exc, TransientGenerationError):
                self.failed_chunks += 1
            self.failures.append(exc)
        finally:
            self._slowest_ms = max(self._slowest_ms, (time.monotonic() - started) * 1000)
            self.pacer.leave()

    async def _write(self, look_up: list[str], beat: bool = False) -> frozenset[str]:
        """One round trip: write the answers received so far, ask which of `look_up` the run
        has processed. Skipped when there is nothing to write or ask, once the run was seen
        (the first round trip also checks the run is still generating)."""
        async with self._writing:
            answered, self._answered = self._answered, []
            if not answered and not look_up and self.run is not None and not beat:
                return frozenset()
            record = BatchRecord(
                run_id=self._run_id,
                attempt=self._attempt,
                chunks=[
                    ChunkQuestions(chunk_id=r.chunk_id, questions=r.questions) for r in answered
                ],
                llm_calls=sum(r.llm_calls for r in answered),
                tokens_used=sum(r.tokens_used for r in answered),
                look_up=look_up,
            )
            self.round_trips += 1
            self._last_trip = time.monotonic()
            try:
                outcome = await asyncio.to_thread(self._record, record)
            except StaleWorkerError:
                self._cancel_in_flight()  # refused: nothing of this worker is wanted any more
                raise
            except BaseException:
                # Kept for the next round trip: writing them again is harmless (a chunk
                # already recorded is ignored whole) if this one did commit after all.
                self._answered[:0] = answered
                raise
            self.run = outcome.run
            self.tally.new_chunks += outcome.new_chunks
            self.tally.new_pairs += outcome.new_pairs
            self.tally.llm_calls += sum(r.llm_calls for r in answered)
            self.tally.retries += sum(r.retries for r in answered)
            self.tally.tokens_used += sum(r.tokens_used for r in answered)
            if outcome.stop and not any(isinstance(f, StaleWorkerError) for f in self.failures):
                run = outcome.run
                self.failures.append(
                    StaleWorkerError(run.id, run.status, run.attempt, self._attempt)
                )
            return outcome.processed

    def _record(self, record: BatchRecord) -> BatchOutcome:
        """In the store's thread."""
        try:
            outcome = self._store.record_batch(record)
        except StaleWorkerError:
            self._stopped = True
            raise
        self._stopped = self._stopped or outcome.stop
        return outcome

    def _cancel_in_flight(self) -> None:
        for task in self._in_flight:
            task.cancel()
