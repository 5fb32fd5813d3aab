"""Hostile probes of generation (issue 15, item 3), each a loopback reproduction of a case that
used to poison a run or pass silently: the real ASL on the local workflow, the real task
handlers and services wired by the composition root, the test PostgreSQL, a real local
DeepLake dataset and the OpenAI-compatible server on loopback answering what it is told to."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from deepmem import wiring
from deepmem.adapters.store.postgres import PostgresStore
from deepmem.adapters.store.supabase import SupabaseStore
from deepmem.config import Config
from deepmem.domain.errors import (
    DatasetMissingError,
    GeneratorNotConfiguredError,
    InvalidDataError,
    RunSourceChangedError,
)
from deepmem.domain.models import BatchRecord, ChunkQuestions, SettingsUpdate, TrainingRun
from deepmem.domain.provenance import MIN_TRAINING_PAIRS
from deepmem.domain.status import Phase, RunStatus
from deepmem.local.functions import load_function
from deepmem.local.workflow import LocalWorkflow
from deepmem.ports import ExecutionState
from deepmem.services.runs import RunService

from tests.fakes.llm_server import FakeLLMServer
from tests.integration.generation_support import build_test_dataset

CHUNKS = 8
QUESTIONS = 3
LANES = 2
CONCURRENCY = 4
LLM_RETRIES = 2  # DEEPMEM_LLM_MAX_RETRIES: each failing chunk costs 1 + 2 calls
BUDGET = 4  # DEEPMEM_MAX_FAILED_CHUNKS
generate_batch = load_function("generate_batch")
train = load_function("train")
record_failure = load_function("record_failure")


@pytest.fixture
def dataset(tmp_path: Path) -> str:
    return build_test_dataset(tmp_path, CHUNKS)


@pytest.fixture
def llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def _config(database_url: str, dataset: str, home: Path, **extra: str) -> Config:
    return Config.model_validate(
        {
            "DATABASE_URL": database_url,
            "DEEPMEM_HOME": str(home),
            "DEEPMEM_DATASET": dataset,
            "DEEPMEM_LLM_MAX_RETRIES": str(LLM_RETRIES),
            "DEEPMEM_MAX_FAILED_CHUNKS": str(BUDGET),
            **extra,
        }
    )


def _llm_config(
    database_url: str, dataset: str, home: Path, llm: FakeLLMServer, **extra: str
) -> Config:
    return _config(
        database_url,
        dataset,
        home,
        OPENAI_BASE_URL=llm.base_url,
        OPENAI_API_KEY="test",
        **extra,
    )


class Stack:
    """The run service and the local workflow over the real handlers, for one configuration."""

    def __init__(self, store: PostgresStore, config: Config) -> None:
        generation = wiring.build_generation_service(config, store)
        training = wiring.build_training_service(config, store)
        self.store = store
        self.workflow = LocalWorkflow(
            {
                "GenerateBatchFunction": lambda event, context: generate_batch.handle(
                    event, generation, context
                ),
                "TrainFunction": lambda event, context: train.handle(event, training),
                "RecordFailureFunction": lambda event, context: record_failure.handle(
                    event, store, None
                ),
            },
            time_scale=0.001,
        )
        self.runs = wiring.build_run_service(config, store, self.workflow)
        self.closed = False

    def generate(self) -> TrainingRun:
        return self._follow(self.runs.start_generation(None).run)

    def proceed(self, run_id: UUID) -> TrainingRun:
        return self._follow(self.runs.proceed(run_id).run)

    def _follow(self, run: TrainingRun) -> TrainingRun:
        execution = self.workflow.wait(run.id, Phase.GENERATING, run.attempt, timeout=180)
        assert execution.state is not ExecutionState.RUNNING
        return self.store.get_run(run.id)

    def close(self) -> None:
        if not self.closed:
            self.workflow.close()
            self.closed = True


@pytest.fixture
def stacks(postgres_store: PostgresStore) -> Iterator[list[Stack]]:
    postgres_store.update_settings(
        SettingsUpdate(
            questions_per_chunk=QUESTIONS, lanes=LANES, concurrency=CONCURRENCY, batch_size=3
        ).apply_to(postgres_store.get_settings())
    )
    made: list[Stack] = []
    yield made
    for stack in made:
        stack.close()


def _stack(stacks: list[Stack], store: PostgresStore, config: Config) -> Stack:
    """A new stack; the earlier ones are closed (one local workflow per process)."""
    for earlier in stacks:
        earlier.close()
    stack = Stack(store, config)
    stacks.append(stack)
    return stack


def _pairs(store: PostgresStore, run_id: UUID) -> list[tuple[str, str]]:
    return [(p.chunk_id, p.question) for p in store.list_pairs(run_id, limit=10_000)]


def test_a_nul_in_every_answer_is_cleaned_and_the_run_completes(
    postgres_store: PostgresStore,
    database_url: str,
    dataset: str,
    tmp_path: Path,
    llm: FakeLLMServer,
    stacks: list[Stack],
) -> None:
    llm.configure(content_mode="nul")
    stack = _stack(stacks, postgres_store, _llm_config(database_url, dataset, tmp_path, llm))

    run = stack.generate()

    assert (run.status, run.error_message) == (RunStatus.GENERATED, None)
    pairs = _pairs(postgres_store, run.id)
    assert len(pairs) == run.pair_count == CHUNKS * QUESTIONS
    assert not any("\x00" in question for _, question in pairs)
    assert llm.max_calls_per_chunk() == 1


def test_a_value_the_store_cannot_hold_is_a_data_error_never_a_transient_one(
    store: PostgresStore | SupabaseStore,
) -> None:
    """Past the cleaning (a caller that skips it): the store's refusal is InvalidDataError,
    which no Retry names, and the run is left as it was, resumable. Both adapters."""
    postgres_store = store
    run = postgres_store.create_run("./d", None)
    postgres_store.set_total_chunks(run.id, 2, attempt=1)
    poisoned = BatchRecord(
        run_id=run.id,
        attempt=1,
        chunks=[
            ChunkQuestions(chunk_id="a", questions=["What is A?"]),
            ChunkQuestions(chunk_id="b", questions=["What is \x00 B?"]),
        ],
    )
    with pytest.raises(InvalidDataError) as caught:
        postgres_store.record_batch(poisoned)
    assert "22" in str(caught.value)
    after = postgres_store.get_run(run.id)
    assert (after.status, after.processed_chunks, after.pair_count) == (RunStatus.GENERATING, 0, 0)
    clean = postgres_store.record_batch(
        BatchRecord(
            run_id=run.id, attempt=1, chunks=[ChunkQuestions(chunk_id="a", questions=["Q a?"])]
        )
    )
    assert clean.new_chunks == 1


def test_prose_answers_reject_their_chunks_and_finish_refuses_then_proceed_redoes_them(
    postgres_store: PostgresStore,
    database_url: str,
    dataset: str,
    tmp_path: Path,
    llm: FakeLLMServer,
    stacks: list[Stack],
) -> None:
    llm.configure(content_mode="prose")
    stack = _stack(stacks, postgres_store, _llm_config(database_url, dataset, tmp_path, llm))

    run = stack.generate()

    assert run.status is RunStatus.GENERATING_FAILED
    assert (run.processed_chunks, run.rejected_chunks, run.pair_count) == (CHUNKS, CHUNKS, 0)
    message = run.error_message or ""
    assert message.startswith("TooFewPairsError")
    assert f"0 pairs from {CHUNKS} chunks, {CHUNKS} of them rejected" in message
    assert f"at least {MIN_TRAINING_PAIRS}" in message
    assert f"deepmem proceed {run.id}" in message and f"deepmem delete {run.id}" in message
    assert llm.max_calls_per_chunk() == 1  # an unusable answer is not retried in the run

    llm.configure(content_mode="json")
    run = stack.proceed(run.id)

    assert (run.status, run.attempt, run.rejected_chunks) == (RunStatus.GENERATED, 2, 0)
    assert run.pair_count == len(_pairs(postgres_store, run.id)) == CHUNKS * QUESTIONS
    assert run.processed_chunks == CHUNKS
    assert llm.max_calls_per_chunk() == 2  # each rejected chunk asked once more, no more


def test_a_run_with_too_few_pairs_is_refused_and_stays_resumable(
    postgres_store: PostgresStore,
    database_url: str,
    dataset: str,
    tmp_path: Path,
    llm: FakeLLMServer,
    stacks: list[Stack],
) -> None:
    """One question per chunk on 8 chunks: 8 usable pairs, fewer than training needs."""
    postgres_store.update_settings(
        SettingsUpdate(questions_per_chunk=1).apply_to(postgres_store.get_settings())
    )
    stack = _stack(stacks, postgres_store, _llm_config(database_url, dataset, tmp_path, llm))

    run = stack.generate()

    assert run.status is RunStatus.GENERATING_FAILED
    assert run.pair_count == CHUNKS
    assert "none of them rejected" in (run.error_message or "")
    assert f"deepmem delete {run.id}" in (run.error_message or "")
    assert postgres_store.delete_run(run.id).deleted_pairs == CHUNKS


@pytest.mark.parametrize(
    "fault",
    [
        {"fail_first": 10_000, "fail_status": 500},
        {"body_mode": "truncated"},
        {"body_mode": "not_completion"},
    ],
    ids=["permanent-500", "truncated-body", "not-a-completion"],
)
def test_an_outage_stops_the_run_within_its_retry_budget(
    postgres_store: PostgresStore,
    database_url: str,
    dataset: str,
    tmp_path: Path,
    llm: FakeLLMServer,
    stacks: list[Stack],
    fault: dict[str, Any],
) -> None:
    llm.configure(**fault)
    stack = _stack(stacks, postgres_store, _llm_config(database_url, dataset, tmp_path, llm))

    run = stack.generate()

    assert run.status is RunStatus.GENERATING_FAILED
    assert (run.error_message or "").startswith("RetryBudgetExhaustedError")
    assert run.failed_chunk_streak >= BUDGET
    assert run.processed_chunks == 0
    # At most the budget plus the chunks in flight when it ran out, each with the adapter's
    # own retries (no Retry of the state machine multiplies them): 8 x 3 = 24 calls here,
    # where a permanent 500 cost 132 calls for 8 chunks before.
    calls = llm.stats()["chat"]
    assert calls <= min(CHUNKS, BUDGET + LANES * CONCURRENCY) * (1 + LLM_RETRIES)

    llm.configure(fail_first=0, body_mode="completion")
    run = stack.proceed(run.id)
    assert (run.status, run.pair_count) == (RunStatus.GENERATED, CHUNKS * QUESTIONS)


def test_a_short_outage_is_absorbed_by_the_retries(
    postgres_store: PostgresStore,
    database_url: str,
    dataset: str,
    tmp_path: Path,
    llm: FakeLLMServer,
    stacks: list[Stack],
) -> None:
    llm.configure(fail_first=3, fail_status=503)
    stack = _stack(stacks, postgres_store, _llm_config(database_url, dataset, tmp_path, llm))

    run = stack.generate()

    assert (run.status, run.error_message) == (RunStatus.GENERATED, None)
    assert run.pair_count == CHUNKS * QUESTIONS


def test_proceed_over_a_changed_dataset_is_refused_with_the_way_out(
    postgres_store: PostgresStore,
    database_url: str,
    dataset: str,
    tmp_path: Path,
    llm: FakeLLMServer,
    stacks: list[Stack],
) -> None:
    llm.configure(content_mode="prose")
    config = _llm_config(database_url, dataset, tmp_path, llm)
    stack = _stack(stacks, postgres_store, config)
    run = stack.generate()
    assert run.status is RunStatus.GENERATING_FAILED and run.dataset_fingerprint
    # The dataset is rebuilt at the same path from another corpus (what the demo did).
    shutil.rmtree(dataset)
    build_test_dataset(tmp_path / "other", CHUNKS + 5)
    shutil.copytree(tmp_path / "other" / "dataset", dataset)
    llm.configure(content_mode="json")

    with pytest.raises(RunSourceChangedError) as caught:
        stack.runs.proceed(run.id)

    message = str(caught.value)
    assert "another version of dataset" in message
    assert f"deepmem delete {run.id}" in message and f"/runs/{run.id}" in message
    assert caught.value.blocking_run_id == str(run.id)
    assert postgres_store.get_run(run.id).status is RunStatus.GENERATING_FAILED
    # Where the proceed cannot read the dataset (an API function), the plan refuses it.
    blind = RunService(postgres_store, stack.workflow, dataset)
    run = stack._follow(blind.proceed(run.id).run)
    assert run.status is RunStatus.GENERATING_FAILED
    assert (run.error_message or "").startswith("RunSourceChangedError")
    assert run.pair_count == 0


def test_proceed_with_another_generator_is_refused(
    postgres_store: PostgresStore,
    database_url: str,
    dataset: str,
    tmp_path: Path,
    llm: FakeLLMServer,
    stacks: list[Stack],
) -> None:
    llm.configure(content_mode="prose")
    stack = _stack(stacks, postgres_store, _llm_config(database_url, dataset, tmp_path, llm))
    run = stack.generate()
    assert (run.generator, run.llm_model) == ("openai", "gpt-4o-mini")
    offline = _stack(
        stacks,
        postgres_store,
        _config(database_url, dataset, tmp_path, DEEPMEM_GENERATOR="offline"),
    )

    with pytest.raises(RunSourceChangedError) as caught:
        offline.runs.proceed(run.id)

    assert "generated by openai (gpt-4o-mini), the configured generator is offline" in str(
        caught.value
    )
    assert f"deepmem delete {run.id}" in str(caught.value)


def test_no_llm_key_refuses_generation_and_says_how_to_choose_offline(
    postgres_store: PostgresStore,
    database_url: str,
    dataset: str,
    tmp_path: Path,
    stacks: list[Stack],
) -> None:
    stack = _stack(stacks, postgres_store, _config(database_url, dataset, tmp_path))

    with pytest.raises(GeneratorNotConfiguredError) as caught:
        stack.runs.start_generation(None)

    assert "DEEPMEM_GENERATOR=offline" in str(caught.value)
    assert "gpt-4o-mini" in str(caught.value)
    assert postgres_store.list_runs() == []
    view = stack.runs.get_settings_view()
    assert view.generator is None and "DEEPMEM_GENERATOR=offline" in (view.generator_problem or "")

    offline = _stack(
        stacks,
        postgres_store,
        _config(database_url, dataset, tmp_path, DEEPMEM_GENERATOR="offline"),
    )
    assert offline.runs.get_settings_view().generator is not None
    run = offline.generate()
    assert (run.status, run.generator, run.llm_model) == (RunStatus.GENERATED, "offline", None)
    # The dataset records the model that embedded it: the run and the settings say so.
    assert run.embedding_model == offline.runs.get_settings_view().embedding_model_in_use
    assert offline.runs.get_settings_view().embedding_model_source == "dataset"


def test_generate_without_a_dataset_is_refused_before_any_run_exists(
    postgres_store: PostgresStore, database_url: str, tmp_path: Path, stacks: list[Stack]
) -> None:
    missing = str(tmp_path / "no-such-dataset")
    stack = _stack(
        stacks,
        postgres_store,
        _config(database_url, missing, tmp_path, DEEPMEM_GENERATOR="offline"),
    )

    with pytest.raises(DatasetMissingError) as caught:
        stack.runs.start_generation(None)

    assert missing in str(caught.value)
    assert postgres_store.list_runs() == []
    assert postgres_store.find_blocking_run() is None
