"""Deep Memory adapter against a loopback server that plays Activeloop's endpoints.

Job status is always read over real HTTP from the server. Submit is exercised twice over:
through the adapter's train-function seam (fast, for the error and deadline paths), and with
deeplake 3.9's real `VectorStore(...).deep_memory.train()` (the last tests of this file).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import deeplake
import httpx
import jwt
import numpy as np
import pytest
from deepmem.adapters.trainers.deep_memory import DeepMemoryTrainer, Relevance, build_training_data
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


# --- the real deeplake 3.9 train() against the loopback service --------------------------------
#
# The fake answers the library's own calls (profile, feature flag, dataset credentials) and maps
# hub://org/<name> to a local folder, so `VectorStore(...).deep_memory.train()` runs for real:
# it writes `<dataset>_queries` and posts the job, and nothing leaves loopback.


class ConstantEmbedder:
    model_name = "constant"
    dimension = 4

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[1.0, 0.0, 0.0, 0.0] for _ in texts]


JWT = jwt.encode({"id": "org", "exp": 4102444800}, "not-a-real-secret-but-long-enough", "HS256")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeActiveloop]:
    import deeplake.client.client as library_client

    # The adapter points the library at its api_url; put the library back afterwards.
    monkeypatch.setattr(library_client, "HUB_REST_ENDPOINT", library_client.HUB_REST_ENDPOINT)
    monkeypatch.setattr(library_client, "requests", library_client.requests)
    corpus = deeplake.empty(str(tmp_path / "ds"), overwrite=True, verbose=False)
    with corpus:
        for name, htype in (("text", "text"), ("metadata", "json"), ("id", "text")):
            corpus.create_tensor(name, htype=htype)
        corpus.create_tensor("embedding", htype="embedding", dtype="float32")
        corpus.extend(
            {
                "text": [f"chunk {i}" for i in range(12)],
                "metadata": [{} for _ in range(12)],
                "id": [f"c{i}" for i in range(12)],
                "embedding": np.eye(12, 4, dtype=np.float32),
            }
        )
    server = FakeActiveloop(token=JWT, storage_root=str(tmp_path))
    with server, loopback_only() as refused:
        yield server
        assert refused == [], "a call left loopback"


def _library_trainer(hub: FakeActiveloop, **kwargs: Any) -> DeepMemoryTrainer:
    return DeepMemoryTrainer(
        DATASET, hub.token, ConstantEmbedder(), api_url=hub.url, status_timeout=5, **kwargs
    )


def test_library_train_writes_the_queries_dataset_and_starts_the_job(
    hub: FakeActiveloop, tmp_path: Path
) -> None:
    run = _run()
    trainer = _library_trainer(hub, submit_timeout=60)

    job_id = trainer.submit(run, _pairs(run))

    train_posts = [r for r in hub.requests if r.path == "/api/deepmemory/v1/train"]
    assert [r.body for r in train_posts] == [
        {"corpus_dataset": DATASET, "query_dataset": f"{DATASET}_queries"}
    ]
    queries = deeplake.load(str(tmp_path / "ds_queries"), read_only=True, verbose=False)
    assert len(queries) == 12
    assert queries.metadata[3].data()["value"] == {"relevance": [["c3", 1]]}
    states = [trainer.check(job_id).state for _ in range(3)]
    assert states == [JobState.PENDING, JobState.TRAINING, JobState.COMPLETED]

    # What the module doc warns about: a second train() replaces <dataset>_queries wholesale.
    fewer = _pairs(run, 10)
    hub.jobs.clear()  # (else submit would wait for the first job: it is "completed" here anyway)
    trainer.submit(run, fewer)
    queries = deeplake.load(str(tmp_path / "ds_queries"), read_only=True, verbose=False)
    assert len(queries) == 10


def test_library_refusal_of_deep_memory_is_a_permanent_error(hub: FakeActiveloop) -> None:
    hub.deep_memory_available = False
    run = _run()
    with pytest.raises(TrainingError, match="not available") as info:
        _library_trainer(hub, submit_timeout=60).submit(run, _pairs(run))
    assert not isinstance(info.value, TransientTrainingError)


def test_library_call_to_a_silent_backend_is_cut_at_the_deadline(hub: FakeActiveloop) -> None:
    hub.stall_paths = ("/api/user/profile",)
    run = _run()
    started = time.monotonic()
    with pytest.raises(TransientTrainingError, match="did not answer"):
        _library_trainer(hub, submit_timeout=1).submit(run, _pairs(run))
    assert time.monotonic() - started < 10

    # The abandoned worker does not go on: once the backend answers, its next call is refused
    # (deeplake would otherwise retry a refused connection forever, in a tight loop).
    worker = next(t for t in threading.enumerate() if t.name == "deepmem-Deep Memory train")
    hub.release.set()
    worker.join(10)
    assert not worker.is_alive()
    assert not any(r.path.startswith("/api/org/") for r in hub.requests)


# --- the streamed submit: `<dataset>_queries` written a keyset page at a time ---------------


class Pages:
    """The run's pairs by keyset, at most `cap` a read (as the SQL caps one), each read kept."""

    def __init__(self, pairs: list[TrainingPair], cap: int) -> None:
        self.pairs, self.cap = pairs, cap
        self.reads: list[int] = []

    def __call__(self, after: int, limit: int) -> list[TrainingPair]:
        page = [p for p in self.pairs if p.id > after][: min(limit, self.cap)]
        self.reads.append(len(page))
        return page


class CountingConstantEmbedder(ConstantEmbedder):
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        return super().embed(texts)


def _asked_twice(run: TrainingRun) -> list[TrainingPair]:
    """40 pairs, 10 questions: each asked of two chunks, twice over, in one page of 8."""
    now = datetime.now(UTC)
    pairs = []
    for i in range(40):
        q = i // 2 if i % 4 < 2 else (i - 2) // 2
        pairs.append(
            TrainingPair(
                id=i + 1,
                run_id=run.id,
                chunk_id=f"c{(q + i % 2) % 12}",
                question=f"what is {q}?",
                created_at=now,
            )
        )
    return pairs


def test_streamed_submit_writes_the_queries_a_page_at_a_time_then_starts_the_job(
    hub: FakeActiveloop, tmp_path: Path
) -> None:
    run = _run().model_copy(update={"pair_count": 40})
    pages = Pages(_asked_twice(run), cap=8)
    embedder = CountingConstantEmbedder()
    trainer = DeepMemoryTrainer(
        DATASET, hub.token, embedder, api_url=hub.url, status_timeout=5, pairs=pages, max_pairs=40
    )

    job_id = trainer.submit(run, iter(()))  # the pairs are read by keyset, not from here

    assert pages.reads == [8, 8, 8, 8, 8, 0]  # five pages, then the empty read that ends it
    # Never more than one page's questions in memory or in one embedding call.
    assert max(len(batch) for batch in embedder.batches) <= 8
    train_posts = [r for r in hub.requests if r.path == "/api/deepmemory/v1/train"]
    assert [r.body for r in train_posts] == [
        {"corpus_dataset": DATASET, "query_dataset": f"{DATASET}_queries"}
    ]
    queries = deeplake.load(str(tmp_path / "ds_queries"), read_only=True, verbose=False)
    # Per page, one query per distinct question with every chunk it was asked of there.
    expected = [build_training_data(pages.pairs[start : start + 8]) for start in range(0, 40, 8)]
    assert len(queries) == sum(len(texts) for texts, _ in expected) == 10
    assert queries.text[0].data()["value"] == "what is 0?"
    relevance = [r for _, page in expected for r in page]
    assert queries.metadata[0].data()["value"] == {"relevance": [list(r) for r in relevance[0]]}
    assert relevance[0] == [("c0", 1), ("c1", 1)]
    assert queries.embedding.numpy().shape == (10, 4)
    assert trainer.check(job_id).state is JobState.PENDING


def test_streamed_submit_refuses_a_run_over_the_limit_before_writing(
    hub: FakeActiveloop, tmp_path: Path
) -> None:
    run = _run().model_copy(update={"pair_count": 41})
    pages = Pages(_asked_twice(run), cap=8)
    trainer = DeepMemoryTrainer(
        DATASET, hub.token, ConstantEmbedder(), api_url=hub.url, pairs=pages, max_pairs=40
    )
    with pytest.raises(TrainingError, match="at most 40 pairs") as info:
        trainer.submit(run, iter(()))
    assert not isinstance(info.value, TransientTrainingError)
    assert pages.reads == [] and not (tmp_path / "ds_queries").exists()
    assert not any(r.path == "/api/deepmemory/v1/train" for r in hub.requests)
    # Too few pairs to hold 10 questions: refused before `<dataset>_queries` is replaced.
    with pytest.raises(NotEnoughPairsError):
        trainer.submit(run.model_copy(update={"pair_count": 9}), iter(()))
    assert pages.reads == [] and not (tmp_path / "ds_queries").exists()


def test_streamed_submit_checks_deep_memory_access_before_writing(
    hub: FakeActiveloop, tmp_path: Path
) -> None:
    hub.deep_memory_available = False
    run = _run().model_copy(update={"pair_count": 40})
    pages = Pages(_asked_twice(run), cap=8)
    trainer = DeepMemoryTrainer(
        DATASET, hub.token, ConstantEmbedder(), api_url=hub.url, pairs=pages, submit_timeout=60
    )
    with pytest.raises(TrainingError, match="not available"):
        trainer.submit(run, iter(()))
    assert pages.reads == [] and not (tmp_path / "ds_queries").exists()
