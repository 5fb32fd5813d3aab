"""Generation past one execution: the deployed ASL on the local workflow, with the real
handlers, database and local DeepLake dataset, and an execution budget so small that every
execution hands over after one batch per lane (continue-as-new through
`arn:aws:states:::states:startExecution`, which moto runs for real). The chain ends with
exactly the pairs of an uninterrupted run and no chunk generated twice; a fault in the third
execution fails the run, and proceed completes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deepmem import wiring
from deepmem.adapters.dataset.deeplake import DeepLakeChunkSource
from deepmem.adapters.generators.offline import OfflineQuestionGenerator
from deepmem.adapters.store.postgres import PostgresStore
from deepmem.config import Config
from deepmem.domain.chunks import Chunk
from deepmem.domain.errors import GenerationError
from deepmem.domain.executions import execution_name
from deepmem.domain.handover import GenerationLimits
from deepmem.domain.models import SettingsUpdate
from deepmem.domain.status import Phase, RunStatus
from deepmem.local.functions import load_function
from deepmem.local.workflow import LocalWorkflow
from deepmem.ports import UNPACED, ExecutionState, GeneratedQuestions, Pacer
from deepmem.services.generation import GenerationService
from deepmem.services.runs import RunService

from tests.integration.generation_support import build_test_dataset

CHUNKS = 36
QUESTIONS = 2
BATCH = 5
LANES = 2
#: 18 chunks a lane, 5 a batch, one batch per lane per execution.
EXECUTIONS = 4
generate_batch = load_function("generate_batch")
record_failure = load_function("record_failure")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_test_dataset(tmp_path_factory.mktemp("handover"), CHUNKS)


@pytest.fixture(scope="module")
def expected_pairs(dataset: str) -> set[tuple[str, str]]:
    """What an uninterrupted run ends with: the offline generator is deterministic."""
    generator = OfflineQuestionGenerator()
    chunks = DeepLakeChunkSource(dataset).read(0, CHUNKS)
    return {(c.id, q) for c in chunks for q in generator.questions(c, QUESTIONS)}


class Counting:
    """The offline generator, counting the chunks it is asked about."""

    def __init__(self) -> None:
        self.inner = OfflineQuestionGenerator()
        self.asked: list[str] = []

    async def generate(
        self, chunk: Chunk, count: int, pacer: Pacer = UNPACED
    ) -> GeneratedQuestions:
        self.asked.append(chunk.id)
        return await self.inner.generate(chunk, count, pacer)


class Handlers:
    """The real generate_batch handler; `fail_in_segment` fails the first batch call of that
    execution of the chain (once)."""

    def __init__(self, store: PostgresStore, config: Config, fail_in_segment: int | None) -> None:
        self.generator = Counting()
        self.service = GenerationService(
            store,
            wiring.chunk_source_for(config),
            lambda _settings: self.generator,
            limits=GenerationLimits(seconds_budget=0),
        )
        self.store = store
        self.fail_in_segment = fail_in_segment
        self.segment = 0

    def generate(self, event: dict[str, Any], context: Any) -> Any:
        if event["action"] == "plan":
            self.segment = event["execution"].get("segment", 0)
        if event["action"] == "batch" and self.segment == self.fail_in_segment:
            self.fail_in_segment = None
            raise GenerationError(f"injected fault in execution {self.segment + 1}")
        return generate_batch.handle(event, self.service, context)

    def record(self, event: dict[str, Any], context: Any) -> Any:
        return record_failure.handle(event, self.store, None)

    def workflow(self) -> LocalWorkflow:
        return LocalWorkflow(
            {
                "GenerateBatchFunction": self.generate,
                "TrainFunction": lambda event, context: None,
                "RecordFailureFunction": self.record,
            }
        )


@pytest.fixture
def config(database_url: str, dataset: str, tmp_path: Path) -> Iterator[Config]:
    config = Config.model_validate(
        {"DATABASE_URL": database_url, "DEEPMEM_HOME": str(tmp_path), "DEEPMEM_DATASET": dataset}
    )
    yield config
    wiring.forget_run_stores()


def _settle(store: PostgresStore) -> None:
    store.update_settings(
        SettingsUpdate(questions_per_chunk=QUESTIONS, lanes=LANES, batch_size=BATCH).apply_to(
            store.get_settings()
        )
    )


def _pairs(store: PostgresStore, run_id: Any) -> list[tuple[str, str]]:
    return [(p.chunk_id, p.question) for p in store.pairs_after(run_id, limit=10_000)]


def test_a_run_that_hands_over_every_batch_ends_with_the_pairs_of_an_uninterrupted_run(
    postgres_store: PostgresStore, config: Config, dataset: str, expected_pairs: set[Any]
) -> None:
    _settle(postgres_store)
    handlers = Handlers(postgres_store, config, fail_in_segment=None)
    with handlers.workflow() as workflow:
        runs = RunService(postgres_store, workflow, dataset)
        run = runs.start_generation(None).run
        last = workflow.wait(run.id, Phase.GENERATING, 1, timeout=300)
        chain = workflow.chain(run.id, Phase.GENERATING, 1)
        histories = [
            workflow.history(run.id, Phase.GENERATING, 1, segment) for segment in range(len(chain))
        ]
        # The port sees the chain's latest execution, and a second start is still refused.
        assert runs.workflow.describe(run.id, Phase.GENERATING, 1) == last
        assert workflow.start(run.id, Phase.GENERATING, 1).name == chain[0]
    assert last.state is ExecutionState.SUCCEEDED
    assert chain == [execution_name(run.id, Phase.GENERATING, 1, n) for n in range(EXECUTIONS)]
    assert chain[1] == f"{run.id}-generating-1-1"
    run = postgres_store.get_run(run.id)
    assert (run.status, run.attempt, run.processed_chunks) == (RunStatus.GENERATED, 1, CHUNKS)
    pairs = _pairs(postgres_store, run.id)
    assert set(pairs) == expected_pairs and len(pairs) == len(expected_pairs) == run.pair_count
    assert sorted(handlers.generator.asked) == sorted(set(handlers.generator.asked))
    assert len(handlers.generator.asked) == CHUNKS
    # Each execution but the last ended by starting the next; the last by finishing.
    for history in histories[:-1]:
        assert any(e["type"] == "TaskSucceeded" and "startExecution" in str(e) for e in history)
        assert history[-1]["type"] == "ExecutionSucceeded"
    assert all(len(h) < 200 for h in histories)
    assert run.estimate is not None and run.estimate["total_chunks"] == CHUNKS


def test_a_fault_in_the_third_execution_fails_the_run_and_proceed_completes_it(
    postgres_store: PostgresStore, config: Config, dataset: str, expected_pairs: set[Any]
) -> None:
    _settle(postgres_store)
    handlers = Handlers(postgres_store, config, fail_in_segment=2)
    with handlers.workflow() as workflow:
        runs = RunService(postgres_store, workflow, dataset)
        run = runs.start_generation(None).run
        failed = workflow.wait(run.id, Phase.GENERATING, 1, timeout=300)
        chain = workflow.chain(run.id, Phase.GENERATING, 1)
        run = postgres_store.get_run(run.id)
        assert failed.state is ExecutionState.FAILED and len(chain) == 3
        assert run.status is RunStatus.GENERATING_FAILED
        assert run.error_message == "GenerationError: injected fault in execution 3"
        assert 0 < run.processed_chunks < CHUNKS
        run = runs.proceed(run.id).run
        done = workflow.wait(run.id, Phase.GENERATING, run.attempt, timeout=300)
    assert done.state is ExecutionState.SUCCEEDED
    run = postgres_store.get_run(run.id)
    assert (run.status, run.attempt, run.processed_chunks) == (RunStatus.GENERATED, 2, CHUNKS)
    pairs = _pairs(postgres_store, run.id)
    assert set(pairs) == expected_pairs and len(pairs) == run.pair_count
    # Resume by chunk identity across the chain and the attempts: no chunk asked twice.
    assert len(handlers.generator.asked) == len(set(handlers.generator.asked)) == CHUNKS
