"""The RunStore contract: every store adapter, and the in-memory fake, must pass these. Run by
`tests/integration/test_store_contract.py` (each adapter on the real database) and
`tests/unit/test_memory_store_contract.py` (the fake), each giving its own `store` fixture."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest
from deepmem.domain.errors import (
    BlockingRunExistsError,
    IncompleteGenerationError,
    InvalidTransitionError,
    RunNotDeletableError,
    RunNotFoundError,
    SettingsLockedError,
    StaleWorkerError,
)
from deepmem.domain.models import BatchRecord, ChunkQuestions, Settings, TrainerKind
from deepmem.domain.provenance import RunSource
from deepmem.domain.status import TRANSITIONS, RunStatus
from deepmem.ports import RunStore

DATASET = "./corpus-ds"


def _batch(
    run_id: UUID, spec: dict[str, list[str]], calls: int = 0, attempt: int = 1
) -> BatchRecord:
    return BatchRecord(
        run_id=run_id,
        attempt=attempt,
        chunks=[ChunkQuestions(chunk_id=c, questions=q) for c, q in spec.items()],
        llm_calls=calls,
    )


def _generated_run(store: RunStore) -> UUID:
    run = store.create_run(DATASET, uuid4())
    store.set_total_chunks(run.id, 2, attempt=1)
    store.record_batch(_batch(run.id, {"c1": ["q1?"], "c2": []}))
    moved = store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATED)
    assert moved is not None
    return run.id


def _move_to(store: RunStore, status: RunStatus) -> UUID:
    """A run in `status`, reached only through allowed transitions."""
    if status == RunStatus.GENERATING:
        return store.create_run(DATASET, None).id
    if status == RunStatus.GENERATING_FAILED:
        run_id = store.create_run(DATASET, None).id
        assert store.transition(run_id, RunStatus.GENERATING, status, error_message="boom")
        return run_id
    run_id = _generated_run(store)
    path = {
        RunStatus.GENERATED: [],
        RunStatus.TRAINING: [RunStatus.TRAINING],
        RunStatus.TRAINING_FAILED: [RunStatus.TRAINING, RunStatus.TRAINING_FAILED],
        RunStatus.COMPLETED: [RunStatus.TRAINING, RunStatus.COMPLETED],
    }[status]
    current = RunStatus.GENERATED
    for step in path:
        assert store.transition(run_id, current, step) is not None
        current = step
    return run_id


def test_create_get_list(store: RunStore) -> None:
    user = uuid4()
    run = store.create_run(DATASET, user)
    assert run.status == RunStatus.GENERATING
    assert run.user_id == user
    assert run.attempt == 1
    assert (run.processed_chunks, run.total_chunks, run.pair_count) == (0, 0, 0)
    assert store.get_run(run.id) == run
    assert [r.id for r in store.list_runs()] == [run.id]


def test_unknown_run_is_not_found(store: RunStore) -> None:
    with pytest.raises(RunNotFoundError):
        store.get_run(uuid4())
    with pytest.raises(RunNotFoundError):
        store.delete_run(uuid4())
    with pytest.raises(RunNotFoundError):
        store.transition(uuid4(), RunStatus.GENERATING, RunStatus.GENERATED)


def test_second_unfinished_run_is_refused_with_the_blocking_run(store: RunStore) -> None:
    first = store.create_run(DATASET, None)
    with pytest.raises(BlockingRunExistsError) as caught:
        store.create_run(DATASET, None)
    assert caught.value.blocking_run_id == str(first.id)
    assert caught.value.blocking_run_status == "generating"
    # Any unfinished run blocks, whatever its dataset.
    with pytest.raises(BlockingRunExistsError):
        store.create_run("hub://org/other", None)
    assert store.find_blocking_run() == store.get_run(first.id)


@pytest.mark.parametrize(
    "status",
    [s for s in RunStatus if s != RunStatus.COMPLETED],
)
def test_every_unfinished_status_blocks(store: RunStore, status: RunStatus) -> None:
    run_id = _move_to(store, status)
    with pytest.raises(BlockingRunExistsError) as caught:
        store.create_run(DATASET, None)
    assert caught.value.blocking_run_status == status.value
    assert caught.value.blocking_run_id == str(run_id)


def test_completing_a_run_unblocks(store: RunStore) -> None:
    _move_to(store, RunStatus.COMPLETED)
    assert store.find_blocking_run() is None
    second = store.create_run(DATASET, None)
    assert second.status == RunStatus.GENERATING
    assert next(r.id for r in store.list_runs()) == second.id


@pytest.mark.parametrize("current", list(RunStatus))
@pytest.mark.parametrize("target", list(RunStatus))
def test_transition_table(store: RunStore, current: RunStatus, target: RunStatus) -> None:
    run_id = _move_to(store, current)
    if target in TRANSITIONS[current]:
        moved = store.transition(run_id, current, target, error_message="why")
        assert moved is not None
        assert moved.status == target
        assert store.get_run(run_id).status == target
    else:
        with pytest.raises(InvalidTransitionError):
            store.transition(run_id, current, target)
        assert store.get_run(run_id).status == current


def test_compare_and_set_returns_none_when_status_moved_on(store: RunStore) -> None:
    run_id = _move_to(store, RunStatus.GENERATING_FAILED)
    assert store.transition(run_id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED) is None
    assert store.get_run(run_id).error_message == "boom"


def test_proceed_clears_error_and_counts_the_attempt(store: RunStore) -> None:
    run_id = _move_to(store, RunStatus.GENERATING_FAILED)
    run = store.transition(
        run_id, RunStatus.GENERATING_FAILED, RunStatus.GENERATING, next_attempt=True
    )
    assert run is not None
    assert (run.status, run.attempt, run.error_message) == ("generating", 2, None)


def test_generated_requires_every_chunk_processed(store: RunStore) -> None:
    run = store.create_run(DATASET, None)
    store.set_total_chunks(run.id, 3, attempt=1)
    store.record_batch(_batch(run.id, {"a": ["qa?"], "b": []}))
    with pytest.raises(IncompleteGenerationError):
        store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATED)
    store.record_batch(_batch(run.id, {"c": ["qc?"]}))
    assert store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATED) is not None


@pytest.mark.parametrize("status", sorted(RunStatus))
def test_delete_rules(store: RunStore, status: RunStatus) -> None:
    run_id = _move_to(store, status)
    pairs = store.get_run(run_id).pair_count
    if status in (RunStatus.GENERATED, RunStatus.GENERATING_FAILED, RunStatus.TRAINING_FAILED):
        outcome = store.delete_run(run_id)
        assert outcome.training_run_id == run_id
        assert outcome.deleted_pairs == pairs
        with pytest.raises(RunNotFoundError):
            store.get_run(run_id)
        assert store.list_pairs(run_id) == []
    else:
        with pytest.raises(RunNotDeletableError):
            store.delete_run(run_id)
        assert store.get_run(run_id).status == status


def test_delete_reports_the_pairs_it_removed(store: RunStore) -> None:
    run = store.create_run(DATASET, None)
    store.record_batch(_batch(run.id, {"a": ["q1?", "q2?"], "b": ["q3?"], "c": []}))
    store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED, error_message="x")
    assert store.delete_run(run.id).deleted_pairs == 3
    assert store.find_blocking_run() is None


def test_recording_the_same_batch_twice_changes_nothing(store: RunStore) -> None:
    run = store.create_run(DATASET, None)
    batch = _batch(run.id, {"a": ["What is A?", "Why A?"], "b": [], "c": ["How C?"]}, calls=3)
    first = store.record_batch(batch)
    assert (first.new_chunks, first.new_pairs) == (3, 3)
    second = store.record_batch(batch)
    assert (second.new_chunks, second.new_pairs) == (0, 0)
    after = store.get_run(run.id)
    assert (after.processed_chunks, after.pair_count, after.llm_calls) == (3, 3, 3)
    # A retry that produced other questions for a processed chunk is ignored whole.
    third = store.record_batch(_batch(run.id, {"a": ["Something new?"], "d": ["What is D?"]}))
    assert (third.new_chunks, third.new_pairs) == (1, 1)
    questions = [p.question for p in store.list_pairs(run.id)]
    assert questions == ["What is A?", "Why A?", "How C?", "What is D?"]


def test_counters_equal_the_rows_they_count(store: RunStore) -> None:
    run = store.create_run(DATASET, None)
    store.record_batch(
        _batch(run.id, {f"c{i}": [f"q{i}-{j}?" for j in range(i % 3)] for i in range(30)})
    )
    store.record_batch(_batch(run.id, {f"c{i}": ["dup?"] for i in range(20, 40)}))
    after = store.get_run(run.id)
    pairs = store.list_pairs(run.id, limit=1000)
    assert after.pair_count == len(pairs) == sum(i % 3 for i in range(30)) + 10
    processed = store.processed_chunk_ids(run.id, [f"c{i}" for i in range(50)])
    assert after.processed_chunks == len(processed) == 40


def test_duplicate_questions_within_a_chunk_are_written_once(store: RunStore) -> None:
    run = store.create_run(DATASET, None)
    outcome = store.record_batch(_batch(run.id, {"a": ["Same?", "Same?"]}))
    assert outcome.new_pairs == 1
    assert store.get_run(run.id).pair_count == 1


def test_a_batch_of_a_cancelled_attempt_is_recorded_and_says_stop(store: RunStore) -> None:
    run_id = _move_to(store, RunStatus.GENERATING_FAILED)  # e.g. cancelled at attempt 1
    outcome = store.record_batch(_batch(run_id, {"x": ["q?"]}, calls=1))
    assert outcome.stop and (outcome.new_chunks, outcome.new_pairs) == (1, 1)
    after = store.get_run(run_id)
    assert (after.status, after.processed_chunks, after.pair_count, after.llm_calls) == (
        RunStatus.GENERATING_FAILED,
        1,
        1,
        1,
    )
    live = store.transition(
        run_id, RunStatus.GENERATING_FAILED, RunStatus.GENERATING, next_attempt=True
    )
    assert live is not None
    going = store.record_batch(BatchRecord(run_id=run_id, attempt=2, chunks=[], look_up=["x", "y"]))
    assert not going.stop and going.processed == {"x"}


def test_a_batch_of_an_older_attempt_is_refused_and_writes_nothing(store: RunStore) -> None:
    run_id = _move_to(store, RunStatus.GENERATING_FAILED)
    assert store.transition(
        run_id, RunStatus.GENERATING_FAILED, RunStatus.GENERATING, next_attempt=True
    )
    with pytest.raises(StaleWorkerError) as caught:
        store.record_batch(_batch(run_id, {"x": ["q?"]}))
    assert (caught.value.current, caught.value.run_attempt, caught.value.attempt) == (
        "generating",
        "2",
        1,
    )
    with pytest.raises(StaleWorkerError):  # a look-up alone too
        store.record_batch(BatchRecord(run_id=run_id, attempt=1, chunks=[], look_up=["x"]))
    with pytest.raises(StaleWorkerError):  # and a newer attempt than the run's
        store.record_batch(BatchRecord(run_id=run_id, attempt=3, chunks=[]))
    after = store.get_run(run_id)
    assert (after.processed_chunks, after.pair_count) == (0, 0)
    assert store.list_pairs(run_id) == []


@pytest.mark.parametrize(
    "status", [RunStatus.GENERATED, RunStatus.TRAINING, RunStatus.TRAINING_FAILED]
)
def test_a_batch_is_refused_once_generation_is_over(store: RunStore, status: RunStatus) -> None:
    run_id = _move_to(store, status)
    before = store.get_run(run_id)
    with pytest.raises(StaleWorkerError):
        store.record_batch(_batch(run_id, {"late": ["q?"]}))
    assert store.get_run(run_id).pair_count == before.pair_count


def test_worker_writes_are_refused_at_another_attempt_or_phase(store: RunStore) -> None:
    generating = store.create_run(DATASET, None).id
    with pytest.raises(StaleWorkerError):
        store.set_total_chunks(generating, 5, attempt=2)
    with pytest.raises(StaleWorkerError):  # a training write during generation
        store.set_training_job(generating, "job-1", attempt=1)
    assert store.get_run(generating).total_chunks == 0
    assert store.transition(generating, RunStatus.GENERATING, RunStatus.GENERATING_FAILED)
    with pytest.raises(StaleWorkerError):  # cancelled: the plan's write is refused
        store.set_total_chunks(generating, 5, attempt=1)
    store.delete_run(generating)
    training = _move_to(store, RunStatus.TRAINING)
    with pytest.raises(StaleWorkerError):
        store.set_training_job(training, "job-1", attempt=2)
    with pytest.raises(StaleWorkerError):
        store.set_metrics(training, {"recall@10": 1.0}, attempt=2)
    assert store.transition(training, RunStatus.TRAINING, RunStatus.TRAINING_FAILED)
    with pytest.raises(StaleWorkerError):
        store.set_metrics(training, {"recall@10": 1.0}, attempt=1)
    after = store.get_run(training)
    assert (after.deeplake_job_id, after.metrics) == (None, {})


def test_a_batch_says_which_chunks_of_its_look_up_are_processed(store: RunStore) -> None:
    run = store.create_run(DATASET, None)
    store.record_batch(_batch(run.id, {"a": ["What is A?"], "b": []}, calls=2))
    written = store.record_batch(
        BatchRecord(
            run_id=run.id,
            attempt=1,
            chunks=[ChunkQuestions(chunk_id="c", questions=["What is C?"])],
            llm_calls=1,
            look_up=["a", "c", "d", "b"],
        )
    )
    # Read after the write, in the same call: the chunk it wrote counts as processed.
    assert written.processed == {"a", "b", "c"}
    assert (written.new_chunks, written.run.processed_chunks) == (1, 3)
    # A look-up alone writes nothing and changes no counter.
    alone = store.record_batch(
        BatchRecord(run_id=run.id, attempt=1, chunks=[], look_up=["d", "a", "e"])
    )
    assert (alone.new_chunks, alone.new_pairs, alone.processed) == (0, 0, {"a"})
    after = store.get_run(run.id)
    assert alone.run == after
    assert (after.processed_chunks, after.pair_count, after.llm_calls) == (3, 2, 3)
    assert (
        store.record_batch(BatchRecord(run_id=run.id, attempt=1, chunks=[])).processed
        == frozenset()
    )


def test_a_look_up_of_an_unknown_run_is_refused(store: RunStore) -> None:
    with pytest.raises(RunNotFoundError):
        store.record_batch(BatchRecord(run_id=uuid4(), attempt=1, chunks=[], look_up=["x"]))


def test_pairs_are_paged_in_insertion_order(store: RunStore) -> None:
    run = store.create_run(DATASET, None)
    store.record_batch(_batch(run.id, {f"c{i:02d}": [f"question {i}?"] for i in range(25)}))
    page1 = store.list_pairs(run.id, limit=10, offset=0)
    page3 = store.list_pairs(run.id, limit=10, offset=20)
    assert [p.question for p in page1] == [f"question {i}?" for i in range(10)]
    assert [p.question for p in page3] == [f"question {i}?" for i in range(20, 25)]


def test_pairs_are_read_by_keyset_after_an_id(store: RunStore) -> None:
    run = store.create_run(DATASET, None)
    store.record_batch(_batch(run.id, {f"c{i:02d}": [f"question {i}?"] for i in range(25)}))
    first = store.pairs_after(run.id, after=0, limit=10)
    second = store.pairs_after(run.id, after=first[-1].id, limit=10)
    last = store.pairs_after(run.id, after=second[-1].id, limit=10)
    assert [p.question for p in first + second + last] == [f"question {i}?" for i in range(25)]
    assert store.pairs_after(run.id, after=last[-1].id, limit=10) == []
    assert store.pairs_after(uuid4(), after=0, limit=10) == []
    assert len(store.pairs_after(run.id, after=0, limit=1_000_000)) == 25  # capped, not refused


def test_job_id_and_metrics_are_kept(store: RunStore) -> None:
    run_id = _move_to(store, RunStatus.TRAINING)
    assert store.set_training_job(run_id, "job-123", attempt=1).deeplake_job_id == "job-123"
    assert store.set_metrics(
        run_id, {"recall@10": {"before": 0.4, "after": 0.5}}, attempt=1
    ).metrics == {"recall@10": {"before": 0.4, "after": 0.5}}


def test_job_id_only_while_training(store: RunStore) -> None:
    run_id = _move_to(store, RunStatus.GENERATED)
    with pytest.raises(InvalidTransitionError):
        store.set_training_job(run_id, "job-1", attempt=1)


def test_settings_round_trip_and_lock(store: RunStore) -> None:
    assert store.get_settings() == Settings()
    changed = Settings(questions_per_chunk=5, lanes=4, trainer=TrainerKind.QUERY_ADAPTER)
    assert store.update_settings(changed) == changed
    assert store.get_settings() == changed
    run = store.create_run(DATASET, None)
    with pytest.raises(SettingsLockedError) as caught:
        store.update_settings(Settings())
    assert caught.value.blocking_run_id == str(run.id)
    assert store.get_settings() == changed


@pytest.mark.parametrize("trainer", list(TrainerKind))
def test_every_trainer_kind_is_a_storable_setting(store: RunStore, trainer: TrainerKind) -> None:
    """The database's check constraint names every trainer the domain knows."""
    changed = Settings(trainer=trainer)
    assert store.update_settings(changed) == changed
    assert store.get_settings().trainer is trainer


def test_compare_and_set_on_the_attempt(store: RunStore) -> None:
    run_id = _move_to(store, RunStatus.GENERATING_FAILED)
    proceeded = store.transition(
        run_id, RunStatus.GENERATING_FAILED, RunStatus.GENERATING, next_attempt=True
    )
    assert proceeded is not None and proceeded.attempt == 2
    # A failure reported for attempt 1 arrives after the proceed: it changes nothing.
    stale = store.transition(
        run_id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED, error_message="old", attempt=1
    )
    assert stale is None
    assert store.get_run(run_id).status == RunStatus.GENERATING
    current = store.transition(
        run_id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED, error_message="new", attempt=2
    )
    assert current is not None and current.error_message == "new"


def test_rejected_chunks_are_counted_and_redone_by_a_proceed(store: RunStore) -> None:
    run = store.create_run(DATASET, None)
    store.set_total_chunks(run.id, 3, attempt=1)
    outcome = store.record_batch(_batch(run.id, {"a": ["What is A?"], "b": [], "c": []}))
    assert (outcome.run.rejected_chunks, outcome.run.processed_chunks) == (2, 3)
    assert store.get_run(run.id).rejected_chunks == 2
    assert store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED)
    again = store.transition(
        run.id, RunStatus.GENERATING_FAILED, RunStatus.GENERATING, next_attempt=True
    )
    assert again is not None
    assert (again.rejected_chunks, again.processed_chunks, again.pair_count) == (0, 1, 1)
    # Only the chunk that gave a pair is still processed: the others are asked again.
    assert store.processed_chunk_ids(run.id, ["a", "b", "c"]) == {"a"}
    redone = store.record_batch(_batch(run.id, {"b": ["What is B?"], "c": []}, attempt=2))
    assert (redone.new_chunks, redone.run.rejected_chunks, redone.run.processed_chunks) == (2, 1, 3)


def test_failed_chunks_form_a_streak_that_an_answer_ends(store: RunStore) -> None:
    run = store.create_run(DATASET, None)
    assert store.record_chunk_failures(run.id, 3, attempt=1) == 3
    assert store.record_chunk_failures(run.id, 2, attempt=1) == 5
    assert store.get_run(run.id).failed_chunk_streak == 5
    store.record_batch(_batch(run.id, {"a": ["What is A?"]}))
    assert store.get_run(run.id).failed_chunk_streak == 0
    with pytest.raises(InvalidTransitionError):
        store.record_chunk_failures(run.id, 1, attempt=2)
    assert store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED)
    with pytest.raises(InvalidTransitionError):
        store.record_chunk_failures(run.id, 1, attempt=1)


def test_the_source_of_a_run_is_recorded_once(store: RunStore) -> None:
    run = store.create_run(DATASET, None)
    first = RunSource(
        dataset_fingerprint="f1", generator="openai", llm_model="m1", embedding_model="e1"
    )
    recorded = store.set_run_source(run.id, first, attempt=1)
    assert (recorded.dataset_fingerprint, recorded.generator, recorded.llm_model) == (
        "f1",
        "openai",
        "m1",
    )
    assert recorded.embedding_model == "e1"
    other = RunSource(dataset_fingerprint="f2", generator="offline", embedding_model="e2")
    kept = store.set_run_source(run.id, other, attempt=1)
    assert (kept.dataset_fingerprint, kept.generator, kept.llm_model, kept.embedding_model) == (
        "f1",
        "openai",
        "m1",
        "e1",
    )
    assert store.get_run(run.id).dataset_fingerprint == "f1"
    assert store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED)
    with pytest.raises(InvalidTransitionError):
        store.set_run_source(run.id, first, attempt=1)
