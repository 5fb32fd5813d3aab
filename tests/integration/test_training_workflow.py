"""The training phase end to end: the real ASL (moto's interpreter, LocalWorkflow), the real
`train` handler and query adapter on a local DeepLake dataset, the real record_failure logic,
an in-memory run store."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from deepmem.adapters.trainers.adapter_job import StreamConfig
from deepmem.adapters.trainers.artifacts import LocalArtifactStore
from deepmem.adapters.trainers.query_adapter import QueryAdapterTrainer
from deepmem.domain.models import BatchRecord, ChunkQuestions, TrainerKind, TrainingRun
from deepmem.domain.status import Phase, RunStatus
from deepmem.local.functions import load_function
from deepmem.local.workflow import LocalWorkflow
from deepmem.ports import ExecutionState
from deepmem.services.runs import RunService
from deepmem.services.training import TrainingService

from tests.fakes.embedder_small import TableEmbedder, write_planted_dataset
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


def _training_run(
    store: MemoryRunStore, dataset: str, questions: list[str], *, to_training: bool = True
) -> TrainingRun:
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
    generated = store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATED)
    if not to_training:
        assert generated is not None
        return generated
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


class FaultyEmbedder:
    """The dataset's embedder, counting the questions it embeds; while `pages_left` is not
    None it embeds that many calls' worth and then fails, as a model endpoint gone away."""

    def __init__(self, inner: TableEmbedder) -> None:
        self.inner = inner
        self.model_name, self.dimension = inner.model_name, inner.dimension
        self.embedded: list[str] = []
        self.pages_left: int | None = None

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.pages_left is not None:
            if self.pages_left == 0:
                raise RuntimeError("the embedding endpoint went away")
            self.pages_left -= 1
        self.embedded.extend(texts)
        return self.inner.embed(texts)


def _streamed_training(
    tmp: Path, store: MemoryRunStore, embedder: FaultyEmbedder
) -> TrainingService:
    artifacts = LocalArtifactStore(tmp / "artifacts")

    def trainer(kind: TrainerKind, run: TrainingRun, model: str) -> QueryAdapterTrainer:
        return QueryAdapterTrainer(
            run.dataset,
            embedder,
            artifacts,
            pairs=functools.partial(store.pairs_after, run.id),
            stream_above=0,  # every run streams, in pages of 50 pairs
            stream_config=StreamConfig(shard_pairs=50, max_epochs=3),
        )

    return TrainingService(store, trainer)


def _train_in_workflow(store: MemoryRunStore, service: TrainingService, start: Any) -> Any:
    handlers = {
        "GenerateBatchFunction": lambda event, context: None,
        "TrainFunction": lambda event, context: train_app.handle(event, service),
        "RecordFailureFunction": lambda event, context: record_failure_app.handle(
            event, store, None
        ),
    }
    with LocalWorkflow(handlers) as workflow:
        started = start(RunService(store, workflow, "unused")).run
        return workflow.wait(started.id, Phase.TRAINING, started.attempt, timeout=120)


def test_a_proceeded_training_reuses_the_questions_its_failed_attempt_embedded(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "dataset")
    table, asked = write_planted_dataset(path, chunks=200, dim=16)
    store = MemoryRunStore()
    run = _training_run(store, path, asked, to_training=False)  # 200 pairs: 4 pages of 50
    embedder = FaultyEmbedder(table)
    embedder.pages_left = 2
    service = _streamed_training(tmp_path / "proceeded", store, embedder)

    failed = _train_in_workflow(store, service, lambda runs: runs.start_training(run.id))
    assert failed.state is ExecutionState.FAILED
    assert store.get_run(run.id).status is RunStatus.TRAINING_FAILED
    assert embedder.embedded == asked[:100]  # two pages, then the fault

    embedder.embedded.clear()
    embedder.pages_left = None
    done = _train_in_workflow(store, service, lambda runs: runs.proceed(run.id))
    assert done.state is ExecutionState.SUCCEEDED
    proceeded = store.get_run(run.id)
    assert proceeded.status is RunStatus.COMPLETED and proceeded.attempt == 2
    # The proceed embedded the two pages attempt 1 had not reached, and nothing else.
    assert embedder.embedded == asked[100:]
    assert proceeded.metrics["shards_reused"] == 2

    # The same adapter as an uninterrupted training of the same pairs.
    other = MemoryRunStore()
    fresh = _training_run(other, path, asked, to_training=False)
    plain = FaultyEmbedder(table)
    whole = _streamed_training(tmp_path / "whole", other, plain)
    assert _train_in_workflow(other, whole, lambda runs: runs.start_training(fresh.id)).state is (
        ExecutionState.SUCCEEDED
    )
    assert sorted(plain.embedded) == sorted(asked)
    matrix = LocalArtifactStore(tmp_path / "proceeded" / "artifacts").load(f"adapter-{run.id}-2")
    uninterrupted = LocalArtifactStore(tmp_path / "whole" / "artifacts").load(
        f"adapter-{fresh.id}-1"
    )
    np.testing.assert_array_equal(matrix.matrix, uninterrupted.matrix)
    assert proceeded.metrics["recall_after"] == other.get_run(fresh.id).metrics["recall_after"]
