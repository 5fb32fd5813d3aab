"""Deep Memory adapter against a loopback server that plays Activeloop's job endpoints.

The library's own `train()` needs Activeloop's dataset storage and managed tensor database
(`<dataset>_queries` is created there), which cannot be played here: submit is exercised
through the adapter's train-function seam (the fake function posts to the loopback server's
`/train` like the library's client does); job status is read over real HTTP from the server.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import pytest
from deepmem.adapters.deep_memory import DeepMemoryTrainer, Relevance, build_training_data
from deepmem.domain.errors import NotEnoughPairsError, TrainingError, TransientTrainingError
from deepmem.domain.models import TrainingPair, TrainingRun
from deepmem.domain.status import RunStatus
from deepmem.ports import JobState

from tests.fakes.activeloop_server import FakeActiveloop, training_script
from tests.fakes.network_guard import loopback_only

DATASET = "hub://org/ds"


@pytest.fixture
def fake() -> Iterator[FakeActiveloop]:
    with FakeActiveloop(token="test-token") as server, loopback_only() as refused:
        yield server
        assert refused == [], "a call left loopback"


def _run() -> TrainingRun:
    now = datetime.now(UTC)
    return TrainingRun(
        id=uuid4(), dataset=DATASET, status=RunStatus.TRAINING, created_at=now, updated_at=now
    )


def _pairs(run: TrainingRun, n: int = 12) -> list[TrainingPair]:
    now = datetime.now(UTC)
    return [
        TrainingPair(
            id=i, run_id=run.id, chunk_id=f"c{i}", question=f"what is {i}?", created_at=now
        )
        for i in range(n)
    ]


class PostingTrain:
    """Stands in for `deep_memory.train`: records its input, starts the job over HTTP."""

    def __init__(self, fake: FakeActiveloop) -> None:
        self.fake = fake
        self.calls: list[tuple[list[str], Relevance]] = []

    def __call__(self, queries: list[str], relevance: Relevance) -> str:
        self.calls.append((queries, relevance))
        response = httpx.post(
            f"{self.fake.url}/api/deepmemory/v1/train",
            json={"corpus_dataset": DATASET, "query_dataset": f"{DATASET}_queries"},
            headers={"Authorization": f"Bearer {self.fake.token}"},
            timeout=5,
        )
        response.raise_for_status()
        return str(response.json()["job_id"])


def _trainer(fake: FakeActiveloop, **kwargs: Any) -> DeepMemoryTrainer:
    kwargs.setdefault("train_function", PostingTrain(fake))
    return DeepMemoryTrainer(DATASET, fake.token, api_url=fake.url, status_timeout=2, **kwargs)


def test_submit_then_poll_pending_training_completed(fake: FakeActiveloop) -> None:
    train = PostingTrain(fake)
    trainer = _trainer(fake, train_function=train)
    run = _run()

    job_id = trainer.submit(run, _pairs(run))

    queries, relevance = train.calls[0]
    assert queries[0] == "what is 0?" and relevance[0] == [("c0", 1)]
    states = [trainer.check(job_id) for _ in range(3)]
    assert [s.state for s in states] == [JobState.PENDING, JobState.TRAINING, JobState.COMPLETED]
    done = states[-1]
    assert done.metrics["recall_after"] == {"recall@10": 0.855}
    assert done.metrics["recall_before"] == {"recall@10": 0.829}
    assert done.metrics["improvement_points@10"] == 2.6
    assert states[1].progress["eta"] == 120.5
    status_calls = [r for r in fake.requests if r.path.endswith(f"/jobs/{job_id}/status")]
    assert len(status_calls) == 3
    assert all(r.authorization == "Bearer test-token" for r in fake.requests)


def test_failed_job_reports_the_service_message(fake: FakeActiveloop) -> None:
    job_id = fake.add_job(training_script(error="list indices must be integers, not str"))
    trainer = _trainer(fake)
    states = [trainer.check(job_id) for _ in range(3)]
    assert states[-1].state is JobState.FAILED
    assert states[-1].error == "list indices must be integers, not str"


def test_unknown_job_is_failed_and_bad_token_is_refused(fake: FakeActiveloop) -> None:
    assert _trainer(fake).check("nope").state is JobState.FAILED
    job_id = fake.add_job(training_script())
    wrong = DeepMemoryTrainer(DATASET, "wrong", api_url=fake.url, train_function=PostingTrain(fake))
    with pytest.raises(TrainingError, match="refused the token") as info:
        wrong.check(job_id)
    assert not isinstance(info.value, TransientTrainingError)


def test_server_errors_are_transient(fake: FakeActiveloop) -> None:
    job_id = fake.add_job(training_script())
    fake.fail_with = 503
    with pytest.raises(TransientTrainingError, match="503"):
        _trainer(fake).check(job_id)


def test_a_silent_server_times_out_quickly() -> None:
    with socket.socket() as silent, loopback_only() as refused:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        trainer = DeepMemoryTrainer(
            DATASET, "t", api_url=url, status_timeout=0.5, train_function=lambda q, r: "x"
        )
        started = time.monotonic()
        with pytest.raises(TransientTrainingError, match="did not answer"):
            trainer.check("job")
        assert time.monotonic() - started < 5
        assert refused == []


def test_submit_waits_while_another_job_runs_on_the_dataset(fake: FakeActiveloop) -> None:
    running = fake.add_job(training_script())  # first poll answers "pending"
    train = PostingTrain(fake)
    run = _run()
    with pytest.raises(TransientTrainingError, match=running):
        _trainer(fake, train_function=train).submit(run, _pairs(run))
    assert train.calls == []  # <dataset>_queries was not overwritten


def test_a_hanging_library_call_is_cut_at_the_deadline(fake: FakeActiveloop) -> None:
    release = threading.Event()

    def hangs(queries: list[str], relevance: Relevance) -> str:
        release.wait(30)  # the library retrying forever, offline
        return "late"

    run = _run()
    trainer = _trainer(fake, train_function=hangs, submit_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TransientTrainingError, match=r"did not answer within 0\.3 s"):
        trainer.submit(run, _pairs(run))
    assert time.monotonic() - started < 5
    release.set()


def test_library_errors_are_classified(fake: FakeActiveloop) -> None:
    class DeepMemoryAccessError(Exception):
        pass

    def refuses(queries: list[str], relevance: Relevance) -> str:
        raise DeepMemoryAccessError("Deep Memory is not available on the Community plan")

    def offline(queries: list[str], relevance: Relevance) -> str:
        raise ConnectionError("connection refused")

    run = _run()
    with pytest.raises(TrainingError, match="Community plan") as info:
        _trainer(fake, train_function=refuses).submit(run, _pairs(run))
    assert not isinstance(info.value, TransientTrainingError)
    with pytest.raises(TransientTrainingError, match="unreachable"):
        _trainer(fake, train_function=offline).submit(run, _pairs(run))


def test_too_few_questions_and_local_datasets_are_refused(fake: FakeActiveloop) -> None:
    run = _run()
    with pytest.raises(NotEnoughPairsError, match="at least 10 distinct questions"):
        _trainer(fake).submit(run, _pairs(run, 4))
    with pytest.raises(TrainingError, match="hub://"):
        DeepMemoryTrainer("/tmp/local", "t", train_function=lambda q, r: "x")


def test_repeated_questions_become_one_query_with_every_chunk() -> None:
    run = _run()
    now = datetime.now(UTC)
    pairs = [
        TrainingPair(id=1, run_id=run.id, chunk_id="a", question="q?", created_at=now),
        TrainingPair(id=2, run_id=run.id, chunk_id="b", question="q? ", created_at=now),
        TrainingPair(id=3, run_id=run.id, chunk_id="a", question="q?", created_at=now),
    ]
    assert build_training_data(pairs) == (["q?"], [[("a", 1), ("b", 1)]])
