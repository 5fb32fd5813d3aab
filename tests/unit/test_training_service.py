"""Training use cases over an in-memory store and a scripted trainer."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest
from deepmem.domain.errors import InvalidTransitionError, TrainingError
from deepmem.domain.models import BatchRecord, ChunkQuestions, Settings, TrainerKind, TrainingRun
from deepmem.domain.status import RunStatus
from deepmem.domain.trainers import adapter_job_id, choose_trainer, kind_of_job, run_of_adapter_job
from deepmem.ports import JobState, JobStatus, Trainer
from deepmem.services.training import TrainingService, needs_resubmit, suggest_wait

from tests.fakes.memory_store import MemoryRunStore
from tests.fakes.trainer import COMPLETED, ScriptedTrainer


def _training_run(store: MemoryRunStore, dataset: str = "/data/ds", pairs: int = 1500) -> UUID:
    run = store.create_run(dataset, None)
    store.set_total_chunks(run.id, pairs, attempt=1)
    store.record_batch(
        BatchRecord(
            run_id=run.id,
            attempt=1,
            chunks=[ChunkQuestions(chunk_id=f"c{i}", questions=[f"q{i}?"]) for i in range(pairs)],
        )
    )
    store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATED)
    store.transition(run.id, RunStatus.GENERATED, RunStatus.TRAINING)
    return run.id


class Factory:
    def __init__(self, **by_kind: Trainer) -> None:
        self.by_kind = by_kind
        self.asked: list[TrainerKind] = []

    def __call__(self, kind: TrainerKind, run: TrainingRun, embedding_model: str) -> Trainer:
        self.asked.append(kind)
        return self.by_kind[kind.value]


def test_trainer_choice() -> None:
    assert choose_trainer(TrainerKind.AUTO, "hub://org/ds") is TrainerKind.DEEP_MEMORY
    local = ".deepmem/dataset"
    assert choose_trainer(TrainerKind.AUTO, local) is TrainerKind.FEEDBACK_ADAPTER
    assert choose_trainer(TrainerKind.QUERY_ADAPTER, local) is TrainerKind.QUERY_ADAPTER
    assert choose_trainer(TrainerKind.QUERY_ADAPTER, "hub://org/ds") is TrainerKind.QUERY_ADAPTER
    feedback = TrainerKind.FEEDBACK_ADAPTER
    assert choose_trainer(feedback, "hub://org/ds") is feedback
    assert choose_trainer(TrainerKind.DEEP_MEMORY, "hub://org/ds") is TrainerKind.DEEP_MEMORY
    with pytest.raises(TrainingError, match="hub://"):
        choose_trainer(TrainerKind.DEEP_MEMORY, "s3://bucket/ds")


def test_each_adapter_kind_has_its_own_job_ids() -> None:
    run_id = uuid4()
    linear = adapter_job_id(run_id, 2)
    feedback = adapter_job_id(run_id, 2, TrainerKind.FEEDBACK_ADAPTER)
    assert linear == f"adapter-{run_id}-2" and feedback == f"feedback-{run_id}-2"
    assert kind_of_job(linear) is TrainerKind.QUERY_ADAPTER
    assert kind_of_job(feedback) is TrainerKind.FEEDBACK_ADAPTER
    assert kind_of_job("job-123") is TrainerKind.DEEP_MEMORY
    assert run_of_adapter_job(linear) == run_of_adapter_job(feedback) == str(run_id)
    assert suggest_wait(TrainerKind.FEEDBACK_ADAPTER, JobState.TRAINING, 5) == 0


def test_resubmit_only_over_failed_jobs_and_backoff_grows() -> None:
    assert needs_resubmit(JobStatus(JobState.FAILED, error="x"))
    assert not any(
        needs_resubmit(JobStatus(s))
        for s in (JobState.PENDING, JobState.TRAINING, JobState.COMPLETED)
    )
    waits = [suggest_wait(TrainerKind.DEEP_MEMORY, JobState.TRAINING, p) for p in range(8)]
    assert waits == sorted(waits) and waits[0] == 30 and waits[-1] == 600
    assert suggest_wait(TrainerKind.QUERY_ADAPTER, JobState.PENDING, 3) == 0
    assert suggest_wait(TrainerKind.DEEP_MEMORY, JobState.TRAINING, None, 4000) == 600


def test_submit_sends_every_page_of_pairs_then_check_completes_the_run() -> None:
    store = MemoryRunStore()
    run_id = _training_run(store)
    trainer = ScriptedTrainer(job_prefix="feedback")  # `auto` on a local dataset
    service = TrainingService(store, Factory(feedback_adapter=trainer))

    step = service.submit(run_id, attempt=1)

    assert len(trainer.submitted[0][1]) == 1500  # two keyset pages
    assert store.get_run(run_id).deeplake_job_id == step.job_id
    assert service.check(run_id, step.job_id).state is JobState.PENDING
    done = service.check(run_id, step.job_id)
    assert done.state is JobState.COMPLETED and done.wait_seconds == 0
    run = store.get_run(run_id)
    assert run.status is RunStatus.COMPLETED
    assert run.metrics == COMPLETED.metrics
    # A retried check after completion changes nothing and still says completed.
    assert service.check(run_id, step.job_id).state is JobState.COMPLETED


def test_failed_job_raises_training_error_with_the_trainer_message() -> None:
    store = MemoryRunStore(Settings(trainer=TrainerKind.AUTO))
    run_id = _training_run(store, dataset="hub://org/ds", pairs=12)
    failing = ScriptedTrainer([JobStatus(JobState.FAILED, error="CUDA out of memory")])
    service = TrainingService(store, Factory(deep_memory=failing))
    step = service.submit(run_id)
    with pytest.raises(TrainingError, match="CUDA out of memory"):
        service.check(run_id, step.job_id)
    assert store.get_run(run_id).status is RunStatus.TRAINING  # record_failure moves it


def test_resubmit_reuses_a_running_job_and_replaces_a_failed_one() -> None:
    store = MemoryRunStore()
    run_id = _training_run(store, dataset="hub://org/ds", pairs=12)
    trainer = ScriptedTrainer([JobStatus(JobState.TRAINING)])
    service = TrainingService(store, Factory(deep_memory=trainer))
    first = service.submit(run_id)
    again = service.submit(run_id)  # e.g. a proceed after a crash: the job still trains
    assert again.reused and again.job_id == first.job_id
    assert len(trainer.submitted) == 1

    trainer.known[first.job_id] = [JobStatus(JobState.FAILED, error="boom")]
    third = service.submit(run_id)
    assert not third.reused and third.job_id != first.job_id
    assert store.get_run(run_id).deeplake_job_id == third.job_id


def test_submit_refuses_runs_not_training_and_stale_attempts() -> None:
    store = MemoryRunStore()
    run = store.create_run("/data/ds", None)
    service = TrainingService(store, Factory(feedback_adapter=ScriptedTrainer()))
    with pytest.raises(InvalidTransitionError):
        service.submit(run.id)
    other = MemoryRunStore()
    run_id = _training_run(other)
    with pytest.raises(InvalidTransitionError):
        TrainingService(other, Factory(feedback_adapter=ScriptedTrainer())).submit(
            run_id, attempt=2
        )


def test_the_settings_can_force_the_adapter_on_a_hub_dataset() -> None:
    store = MemoryRunStore(Settings(trainer=TrainerKind.QUERY_ADAPTER))
    run_id = _training_run(store, dataset="hub://org/ds", pairs=12)
    factory = Factory(query_adapter=ScriptedTrainer(job_prefix="adapter"))
    step = TrainingService(store, factory).submit(run_id)
    assert factory.asked == [TrainerKind.QUERY_ADAPTER]
    assert kind_of_job(step.job_id) is TrainerKind.QUERY_ADAPTER
