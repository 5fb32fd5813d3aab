"""The deployed ASL on the local workflow with the real task handlers, the real services, the
real test database and a real local DeepLake dataset: generation and training end to end, a
fault in every task state in turn, recovery by proceed, and a transient fault that the
state machine's Retry absorbs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deepmem import wiring
from deepmem.adapters.dataset.deeplake import DeepLakeChunkSource
from deepmem.adapters.embedders.offline import OfflineEmbedder
from deepmem.adapters.generators.offline import OfflineQuestionGenerator
from deepmem.adapters.store.postgres import PostgresStore
from deepmem.config import Config
from deepmem.domain.chunks import Chunk
from deepmem.domain.errors import (
    DatasetError,
    GenerationError,
    IncompleteGenerationError,
    TrainingError,
    TransientGenerationError,
)
from deepmem.domain.models import SettingsUpdate
from deepmem.domain.status import Phase, RunStatus
from deepmem.local.functions import load_function
from deepmem.local.workflow import LocalWorkflow
from deepmem.ports import UNPACED, ExecutionState, GeneratedQuestions, Pacer
from deepmem.services.generation import GenerationService
from deepmem.services.runs import RunService

from tests.integration.generation_support import build_test_dataset

CHUNKS = 36
QUESTIONS = 3
generate_batch = load_function("generate_batch")
train = load_function("train")
record_failure = load_function("record_failure")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    # The real embedder: the query adapter embeds questions with the dataset's own model.
    return build_test_dataset(tmp_path_factory.mktemp("real"), CHUNKS, OfflineEmbedder())


@pytest.fixture(scope="module")
def expected_pairs(dataset: str) -> set[tuple[str, str]]:
    """What an uninterrupted run must end with: the offline generator is deterministic."""
    generator = OfflineQuestionGenerator()
    chunks = DeepLakeChunkSource(dataset).read(0, CHUNKS)
    return {(c.id, q) for c in chunks for q in generator.questions(c, QUESTIONS)}


class Faults:
    """Fail a task once: at the handler's door, or (for a batch) after some chunks."""

    def __init__(self, action: str | None = None, error: type[Exception] | None = None) -> None:
        self.action = action
        self.error = error
        self.generated = 0
        self.calls = 0  # chunks the generator really answered, over all attempts
        self.setups: list[Any] = []  # the `setup` of every batch task's input

    def at(self, action: str) -> None:
        if self.action == action and self.error is not None and action != "batch":
            error, self.error = self.error, None
            raise error(f"injected fault in {action}")

    def in_batch(self) -> None:
        if self.action == "batch" and self.error is not None:
            if self.generated >= CHUNKS // 3:
                error = self.error
                if error is TransientGenerationError:
                    self.error = None  # transient: the retry goes through
                raise error("injected fault in batch")
            self.generated += 1


class FaultyGenerator:
    def __init__(self, faults: Faults) -> None:
        self._inner = OfflineQuestionGenerator()
        self._faults = faults

    async def generate(
        self, chunk: Chunk, count: int, pacer: Pacer = UNPACED
    ) -> GeneratedQuestions:
        self._faults.in_batch()
        self._faults.calls += 1
        return await self._inner.generate(chunk, count, pacer)


@pytest.fixture
def config(database_url: str, dataset: str, tmp_path: Path) -> Iterator[Config]:
    config = Config.model_validate(
        {"DATABASE_URL": database_url, "DEEPMEM_HOME": str(tmp_path), "DEEPMEM_DATASET": dataset}
    )
    yield config
    store = wiring.shared_run_store(config)
    close = getattr(store, "close", None)
    if close is not None:
        close()
    wiring.forget_run_stores()


def _workflow(store: PostgresStore, config: Config, faults: Faults) -> LocalWorkflow:
    generation = GenerationService(
        store, wiring.chunk_source_for(config), lambda _settings: FaultyGenerator(faults)
    )
    training = wiring.build_training_service(config, store)

    def generate(event: dict[str, Any], context: Any) -> Any:
        faults.at(event["action"])
        if event["action"] == "batch":
            faults.setups.append(event.get("setup"))
        return generate_batch.handle(event, generation, context)

    def train_task(event: dict[str, Any], context: Any) -> Any:
        faults.at(event["action"])
        return train.handle(event, training)

    def record(event: dict[str, Any], context: Any) -> Any:
        return record_failure.handle(event, store, None)

    return LocalWorkflow(
        {
            "GenerateBatchFunction": generate,
            "TrainFunction": train_task,
            "RecordFailureFunction": record,
        }
    )


def _run_phase(
    runs: RunService, workflow: LocalWorkflow, run_id: Any, phase: Phase, attempt: int
) -> None:
    execution = workflow.wait(run_id, phase, attempt, timeout=120)
    assert execution.state is not ExecutionState.RUNNING


@pytest.mark.parametrize(
    ("action", "error", "failed"),
    [
        (None, None, None),
        ("plan", DatasetError, RunStatus.GENERATING_FAILED),
        ("batch", GenerationError, RunStatus.GENERATING_FAILED),
        ("finish", IncompleteGenerationError, RunStatus.GENERATING_FAILED),
        ("submit", TrainingError, RunStatus.TRAINING_FAILED),
        ("check", TrainingError, RunStatus.TRAINING_FAILED),
    ],
)
def test_a_fault_in_each_task_fails_its_phase_and_proceed_completes_exactly(
    postgres_store: PostgresStore,
    config: Config,
    dataset: str,
    expected_pairs: set[tuple[str, str]],
    action: str | None,
    error: type[Exception] | None,
    failed: RunStatus | None,
) -> None:
    postgres_store.update_settings(
        SettingsUpdate(questions_per_chunk=QUESTIONS, lanes=2, batch_size=5).apply_to(
            postgres_store.get_settings()
        )
    )
    faults = Faults(action, error)
    with _workflow(postgres_store, config, faults) as workflow:
        runs = RunService(postgres_store, workflow, dataset)
        run = runs.start_generation(None).run
        _run_phase(runs, workflow, run.id, Phase.GENERATING, 1)
        run = postgres_store.get_run(run.id)
        if failed is RunStatus.GENERATING_FAILED:
            assert run.status is failed
            assert error is not None and run.error_message is not None
            assert run.error_message.startswith(error.__name__)
            assert "injected fault" in run.error_message
            _assert_consistent(postgres_store, run.id)
            faults.error = None  # the cause is gone: proceed
            run = runs.proceed(run.id).run
            _run_phase(runs, workflow, run.id, Phase.GENERATING, run.attempt)
            run = postgres_store.get_run(run.id)
        assert run.status is RunStatus.GENERATED
        assert run.error_message is None

        run = runs.start_training(run.id).run
        _run_phase(runs, workflow, run.id, Phase.TRAINING, run.attempt)
        run = postgres_store.get_run(run.id)
        if failed is RunStatus.TRAINING_FAILED:
            assert run.status is failed
            assert run.error_message == f"TrainingError: injected fault in {action}"
            run = runs.proceed(run.id).run
            _run_phase(runs, workflow, run.id, Phase.TRAINING, run.attempt)
            run = postgres_store.get_run(run.id)
    assert run.status is RunStatus.COMPLETED
    assert run.attempt == (1 if failed is None else 2)
    assert run.total_chunks == run.processed_chunks == CHUNKS
    pairs = {(p.chunk_id, p.question) for p in postgres_store.list_pairs(run.id, limit=10_000)}
    assert pairs == expected_pairs
    assert run.pair_count == len(expected_pairs)
    assert "recall_after" in run.metrics
    # Resume is by chunk identity: no chunk was generated twice, across both attempts.
    assert faults.calls == CHUNKS
    # Every lane call got the plan's setup through the Map, so none read the run or settings.
    assert faults.setups
    assert {s["dataset"] for s in faults.setups} == {dataset}
    assert {s["settings"]["batch_size"] for s in faults.setups} == {5}


def test_a_transient_fault_leaves_no_trace_but_the_retry(
    postgres_store: PostgresStore, config: Config, dataset: str
) -> None:
    faults = Faults("batch", TransientGenerationError)
    with _workflow(postgres_store, config, faults) as workflow:
        runs = RunService(postgres_store, workflow, dataset)
        run = runs.start_generation(None).run
        _run_phase(runs, workflow, run.id, Phase.GENERATING, 1)
        history = workflow.history(run.id, Phase.GENERATING, 1)
    run = postgres_store.get_run(run.id)
    assert (run.status, run.attempt, run.error_message) == (RunStatus.GENERATED, 1, None)
    assert run.processed_chunks == CHUNKS
    failed_tasks = [e for e in history if e["type"] == "TaskFailed"]
    assert len(failed_tasks) == 1
    assert "TransientGenerationError" in str(failed_tasks[0])
    _assert_consistent(postgres_store, run.id)


def _assert_consistent(store: PostgresStore, run_id: Any) -> None:
    run = store.get_run(run_id)
    pairs = [(p.chunk_id, p.question) for p in store.list_pairs(run_id, limit=10_000)]
    assert run.pair_count == len(pairs) == len(set(pairs))
    ids = {p[0] for p in pairs}
    assert len(store.processed_chunk_ids(run_id, sorted(ids))) == len(ids)
