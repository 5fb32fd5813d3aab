"""Stale workers on fakes (issue 15, item 2): a cancel mid-lane keeps the answers received and
starts no new chunk; a new attempt refuses the old lane; plan, finish and the training task
refuse another attempt or phase."""

from __future__ import annotations

import asyncio
from uuid import UUID

import pytest
from deepmem.domain.chunks import Chunk
from deepmem.domain.errors import StaleWorkerError
from deepmem.domain.models import Settings, TrainerKind
from deepmem.domain.status import RunStatus
from deepmem.ports import UNPACED, GeneratedQuestions, JobState, Pacer
from deepmem.services.generation import GenerationService
from deepmem.services.training import TrainingService

from tests.fakes.memory_store import MemoryRunStore
from tests.fakes.trainer import ScriptedTrainer
from tests.unit.test_generation_service import DATASET, ListSource

CHUNKS = 40


class MovingGenerator:
    """Answers; at its `at`-th call, moves the run as a cancel (or a cancel + proceed) would."""

    def __init__(self, store: MemoryRunStore, run_id: UUID, at: int, proceed: bool) -> None:
        self.store, self.run_id, self.at, self.proceed = store, run_id, at, proceed
        self.calls: list[str] = []
        self.moved_after: int | None = None

    async def generate(
        self, chunk: Chunk, count: int, pacer: Pacer = UNPACED
    ) -> GeneratedQuestions:
        self.calls.append(chunk.id)
        if len(self.calls) == self.at:
            self.store.transition(
                self.run_id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED, attempt=1
            )
            if self.proceed:
                self.store.transition(
                    self.run_id,
                    RunStatus.GENERATING_FAILED,
                    RunStatus.GENERATING,
                    next_attempt=True,
                )
            self.moved_after = len(self.calls)
        await asyncio.sleep(0.001)
        return GeneratedQuestions(chunk.id, [f"What is {chunk.id}?"])


def _lane(proceed: bool) -> tuple[MemoryRunStore, UUID, MovingGenerator, GenerationService]:
    store = MemoryRunStore(Settings(batch_size=5, concurrency=2, lanes=1))
    run_id = store.create_run(DATASET, None).id
    generator = MovingGenerator(store, run_id, at=12, proceed=proceed)
    source = ListSource(CHUNKS)
    service = GenerationService(store, lambda _d: source, lambda _s: generator)
    return store, run_id, generator, service


def test_a_cancel_mid_lane_records_the_answers_and_starts_nothing_more() -> None:
    store, run_id, generator, service = _lane(proceed=False)
    plan = service.plan(run_id, attempt=1)
    with pytest.raises(StaleWorkerError):
        service.batch(run_id, plan.lanes[0], setup=plan.setup, attempt=1)
    run = store.get_run(run_id)
    assert run.status is RunStatus.GENERATING_FAILED
    # Every answer the lane received was recorded, and only the chunks in flight or already
    # taken before the next round trip were sent after the cancel: far from the 40.
    assert run.processed_chunks == len(generator.calls) == len(set(generator.calls))
    assert len(generator.calls) <= 12 + 2 * 5 + 2  # at most two batches and the slots


def test_a_new_attempt_refuses_the_old_lane_and_records_nothing_of_it() -> None:
    store, run_id, generator, service = _lane(proceed=True)
    plan = service.plan(run_id, attempt=1)
    with pytest.raises(StaleWorkerError) as caught:
        service.batch(run_id, plan.lanes[0], setup=plan.setup, attempt=1)
    assert (caught.value.run_attempt, caught.value.attempt) == ("2", 1)
    run = store.get_run(run_id)
    assert (run.status, run.attempt) == (RunStatus.GENERATING, 2)
    assert run.processed_chunks < 12  # answered after the proceed: refused, not recorded
    assert len(generator.calls) <= 12 + 2 * 5 + 2  # at most two batches and the slots


def test_plan_and_finish_refuse_another_attempt() -> None:
    store, run_id, _, service = _lane(proceed=False)
    with pytest.raises(StaleWorkerError):
        service.plan(run_id, attempt=2)
    assert store.get_run(run_id).total_chunks == 0
    service.plan(run_id, attempt=1)
    store.transition(run_id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED)
    store.transition(run_id, RunStatus.GENERATING_FAILED, RunStatus.GENERATING, next_attempt=True)
    with pytest.raises(StaleWorkerError):
        service.finish(run_id, attempt=1)
    assert store.get_run(run_id).status is RunStatus.GENERATING


def _training_run(store: MemoryRunStore) -> UUID:
    run_id = store.create_run(DATASET, None).id
    store.transition(run_id, RunStatus.GENERATING, RunStatus.GENERATED)
    store.transition(run_id, RunStatus.GENERATED, RunStatus.TRAINING)
    return run_id


def test_the_training_task_refuses_a_cancelled_run_and_another_attempt() -> None:
    store = MemoryRunStore(Settings(trainer=TrainerKind.QUERY_ADAPTER))
    run_id = _training_run(store)
    trainer = ScriptedTrainer(job_prefix="adapter")
    service = TrainingService(store, lambda _kind, _run, _model: trainer)
    step = service.submit(run_id, attempt=1)
    with pytest.raises(StaleWorkerError):
        service.check(run_id, step.job_id, attempt=2)
    store.transition(run_id, RunStatus.TRAINING, RunStatus.TRAINING_FAILED, error_message="x")
    with pytest.raises(StaleWorkerError):  # cancelled: the check writes no metrics
        service.check(run_id, step.job_id, attempt=1)
    run = store.get_run(run_id)
    assert (run.status, run.metrics) == (RunStatus.TRAINING_FAILED, {})
    assert step.state is JobState.PENDING
