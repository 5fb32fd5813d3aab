"""The training phase end to end: the real ASL (moto's interpreter, LocalWorkflow), the real
`train` handler and query adapter on a local DeepLake dataset, the real record_failure logic,
an in-memory run store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deepmem.adapters.trainers.artifacts import LocalArtifactStore
from deepmem.adapters.trainers.query_adapter import QueryAdapterTrainer
from deepmem.domain.models import BatchRecord, ChunkQuestions, TrainingRun
from deepmem.domain.status import Phase, RunStatus
from deepmem.local.functions import load_function
from deepmem.local.workflow import LocalWorkflow
from deepmem.ports import ExecutionState
from deepmem.services.training import TrainingService

from tests.fakes.embedder_small import write_planted_dataset
from tests.fakes.memory_store import MemoryRunStore

train_app = load_function("train")
record_failure_app = load_function("record_failure")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[MemoryRunStore, LocalWorkflow, str, list[str]]]:
    path = str(tmp_path / "dataset")
    embedder, asked = write_planted_dataset(path, chunks=200, dim=16)
    store = MemoryRunStore()
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    service = TrainingService(
        store, lambda kind, run, model: QueryAdapterTrainer(run.dataset, embedder, artifacts)
    )

    def train(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return train_app.handle(event, service)

    def record(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return record_failure_app.handle(event, store, None)

    def generate(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise AssertionError("no generation in this test")

    with LocalWorkflow(
        {
            "GenerateBatchFunction": generate,
            "TrainFunction": train,
            "RecordFailureFunction": record,
        }
    ) as workflow:
        yield store, workflow, path, asked


def _training_run(store: MemoryRunStore, dataset: str, questions: list[str]) -> TrainingRun:
    run = store.create_run(dataset, None)
    store.set_total_chunks(run.id, len(questions), attempt=1)
    store.record_batch(
        BatchRecord(
            run_id=run.id,
            attempt=1,
            chunks=[
                ChunkQuestions(chunk_id=f"id-{i}", questions=[q]) for i, q in enumerate(questions)
            ],
        )
    )
    store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATED)
    moved = store.transition(run.id, RunStatus.GENERATED, RunStatus.TRAINING)
    assert moved is not None
    return moved


def test_training_phase_completes_the_run_with_recall_metrics(
    setup: tuple[MemoryRunStore, LocalWorkflow, str, list[str]],
) -> None:
    store, workflow, path, asked = setup
    run = _training_run(store, path, asked)

    workflow.start(run.id, Phase.TRAINING, run.attempt)
    execution = workflow.wait(run.id, Phase.TRAINING, run.attempt, timeout=60)

    assert execution.state is ExecutionState.SUCCEEDED
    done = store.get_run(run.id)
    assert done.status is RunStatus.COMPLETED
    assert done.deeplake_job_id == f"adapter-{run.id}-1"
    assert done.metrics["recall_after"]["recall@1"] > done.metrics["recall_before"]["recall@1"]


def test_too_few_pairs_fail_the_run_with_the_reason_kept(
    setup: tuple[MemoryRunStore, LocalWorkflow, str, list[str]],
) -> None:
    store, workflow, path, asked = setup
    run = _training_run(store, path, asked[:4])

    workflow.start(run.id, Phase.TRAINING, run.attempt)
    execution = workflow.wait(run.id, Phase.TRAINING, run.attempt, timeout=60)

    assert execution.state is ExecutionState.FAILED
    assert execution.error == "NotEnoughPairsError"
    failed = store.get_run(run.id)
    assert failed.status is RunStatus.TRAINING_FAILED
    assert "at least 10 distinct questions" in (failed.error_message or "")
