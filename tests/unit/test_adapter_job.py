"""The streamed query-adapter job on synthetic embeddings: it embeds every question once (and
once across the attempts of a run: a proceed reuses what was embedded), in
shards written as made, resumes from its checkpoint in whatever slices it is run, and ends
with the same map however it was sliced."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest
from deepmem.adapters.dataset.corpus import Corpus
from deepmem.adapters.trainers.adapter_job import StreamConfig, StreamedAdapterJob
from deepmem.adapters.trainers.adapter_maths import normalize
from deepmem.adapters.trainers.artifacts import LocalArtifactStore
from deepmem.adapters.trainers.guard import GuardConfig, split_pairs
from deepmem.adapters.trainers.guarded import GuardPairs
from deepmem.adapters.trainers.query_maps import FEEDBACK_MODEL, FeedbackMap, QueryModel
from deepmem.domain.errors import NotEnoughPairsError
from deepmem.domain.models import TrainingPair
from deepmem.ports import JobState

from tests.fakes.embedder import HashingEmbedder

RUN = uuid4()
CHUNKS = 200
CONFIG = StreamConfig(shard_pairs=150, heldout_max=40, holdout=0.2, max_epochs=3, patience=5)


class CountingEmbedder(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__(16)
        self.seen: Counter[str] = Counter()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.seen.update(texts)
        return super().embed(texts)


def _corpus() -> Corpus:
    embedder = HashingEmbedder(16)
    ids = [f"c{i}" for i in range(CHUNKS)]
    vectors = embedder.embed(
        [f"report {i} on topic {i % 9} and shock {i % 5}" for i in range(CHUNKS)]
    )
    return Corpus(
        "mem://x",
        ids,
        normalize(np.asarray(vectors, dtype=np.float32)),
        {c: i for i, c in enumerate(ids)},
    )


def _pairs() -> list[TrainingPair]:
    now = datetime.now(UTC)
    pairs = []
    for i in range(600):
        chunk = i % CHUNKS
        question = f"what does report {chunk} say on topic {chunk % 9} ({i // CHUNKS})?"
        pairs.append(
            TrainingPair(
                id=i + 1, run_id=RUN, chunk_id=f"c{chunk}", question=question, created_at=now
            )
        )
    return pairs


def _job(
    tmp: Path,
    embedder: HashingEmbedder,
    pairs: list[TrainingPair],
    model: QueryModel | None = None,
) -> StreamedAdapterJob:
    corpus = _corpus()

    def pages(after: int, limit: int) -> list[TrainingPair]:
        return [p for p in pairs if p.id > after][:limit]

    return StreamedAdapterJob(
        "adapter-x-1",
        str(RUN),
        LocalArtifactStore(tmp),
        embedder=embedder,
        corpus=lambda: corpus,
        pairs=pages,
        config=CONFIG,
        model=model,
    )


def test_a_job_run_in_slices_ends_as_one_run_at_once(tmp_path: Path) -> None:
    pairs = _pairs()
    sliced_embedder = CountingEmbedder()
    slices = 0
    while True:
        # A fresh job object each time: everything it knows comes from the artifact store.
        status = _job(tmp_path / "sliced", sliced_embedder, pairs).run(seconds=0)
        slices += 1
        if status.state is JobState.COMPLETED:
            break
        assert status.state is JobState.TRAINING
    whole = _job(tmp_path / "whole", HashingEmbedder(16), pairs).run(seconds=3600)
    assert whole.state is JobState.COMPLETED
    # 4 shards embedded, then a unit per shard per epoch: many slices, one result.
    assert slices >= 4 + 3 * 4
    sliced = LocalArtifactStore(tmp_path / "sliced").load("adapter-x-1")
    at_once = LocalArtifactStore(tmp_path / "whole").load("adapter-x-1")
    np.testing.assert_array_equal(sliced.matrix, at_once.matrix)
    assert sliced.metrics["invocations"] == slices and at_once.metrics["invocations"] == 1
    # Every question embedded exactly once across all the slices.
    assert max(sliced_embedder.seen.values()) == 1
    assert sum(sliced_embedder.seen.values()) == len({p.question for p in pairs})
    metrics = sliced.metrics
    assert metrics["pairs"] == 600 and metrics["streamed"] is True
    assert 0 < metrics["heldout_questions"] <= CONFIG.heldout_max
    guard = metrics["guard"]
    assert guard["pairs"] > 0 and guard["questions"] > 0
    # The streamed job holds out exactly the pairs the in-memory path would (`split_pairs`).
    held = json.loads(
        LocalArtifactStore(tmp_path / "sliced").get_blob("adapter-x-1", GuardPairs.FILE) or b""
    )
    _, in_memory = split_pairs([(p.question, p.chunk_id) for p in pairs], GuardConfig())
    assert [tuple(p) for p in held] == in_memory
    # Applied or not, the pointer search reads follows the guard's verdict.
    active = LocalArtifactStore(tmp_path / "sliced").active_job_id()
    assert (active == "adapter-x-1") is guard["applied"]
    # Every pair is the guard's or training's (train + early-stopping held-out), never both.
    assert metrics["train_questions"] + metrics["heldout_questions"] + guard["pairs"] == 600
    assert metrics["heldout_loss_after"] <= metrics["heldout_loss_before"]


def test_too_few_questions_is_refused(tmp_path: Path) -> None:
    job = _job(tmp_path, HashingEmbedder(16), _pairs()[:5])
    with pytest.raises(NotEnoughPairsError):
        job.run(seconds=3600)


class FailingEmbedder(CountingEmbedder):
    """Embeds `pages` calls' worth, then fails as a model endpoint that went away would."""

    def __init__(self, pages: int) -> None:
        super().__init__()
        self.pages = pages

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.pages == 0:
            raise RuntimeError("the embedding model is gone")
        self.pages -= 1
        return super().embed(texts)


def _attempt(
    tmp: Path, attempt: int, embedder: HashingEmbedder, pairs: list[TrainingPair]
) -> StreamedAdapterJob:
    job = _job(tmp, embedder, pairs)
    job.job_id = f"adapter-x-{attempt}"
    return job


def test_a_proceeded_job_embeds_only_the_pages_its_earlier_attempt_did_not(
    tmp_path: Path,
) -> None:
    pairs = _pairs()  # 600 pairs: 4 pages of 150
    first = FailingEmbedder(pages=2)
    with pytest.raises(RuntimeError, match="gone"):
        _attempt(tmp_path / "store", 1, first, pairs).run(seconds=3600)
    assert sum(first.seen.values()) == 300  # two pages embedded, then the fault

    second = CountingEmbedder()
    done = _attempt(tmp_path / "store", 2, second, pairs).run(seconds=3600)
    assert done.state is JobState.COMPLETED
    # Only the last two pages were embedded again; the first two came from attempt 1.
    assert set(second.seen) == {p.question for p in pairs[300:]}
    assert max(second.seen.values()) == 1

    uninterrupted = _job(tmp_path / "fresh", HashingEmbedder(16), pairs).run(seconds=3600)
    assert uninterrupted.state is JobState.COMPLETED
    proceeded = LocalArtifactStore(tmp_path / "store").load("adapter-x-2")
    at_once = LocalArtifactStore(tmp_path / "fresh").load("adapter-x-1")
    np.testing.assert_array_equal(proceeded.matrix, at_once.matrix)
    assert proceeded.metrics["shards_reused"] == 2 and at_once.metrics["shards_reused"] == 0
    assert proceeded.metrics["recall_after"] == at_once.metrics["recall_after"]


class OtherModel(CountingEmbedder):
    @property
    def model_name(self) -> str:
        return "another-model-16"


def test_nothing_is_reused_across_a_change_of_model_or_of_pairs(tmp_path: Path) -> None:
    pairs = _pairs()
    assert _attempt(tmp_path, 1, HashingEmbedder(16), pairs).run(3600).state is JobState.COMPLETED

    other_model = OtherModel()
    _attempt(tmp_path, 2, other_model, pairs).run(seconds=3600)
    assert sum(other_model.seen.values()) == 600  # every page again: another model

    # One pair's question edited in the second page: that page alone is embedded again.
    edited = list(pairs)
    edited[200] = edited[200].model_copy(update={"question": "an edited question?"})
    same_model = CountingEmbedder()
    _attempt(tmp_path, 3, same_model, edited).run(seconds=3600)
    assert set(same_model.seen) == {p.question for p in edited[150:300]}

    # A kept file that does not hold what its name says is embedded again, not trusted.
    kept = sorted((tmp_path / f"embedded-{RUN}" / "work").glob("questions-*.npz"))
    assert len(kept) == 4 + 4 + 1
    for n, path in enumerate(kept):
        whole = path.read_bytes()
        path.write_bytes(b"not an npz" if n % 2 else whole[: len(whole) // 2])  # or cut short
    again = CountingEmbedder()
    _attempt(tmp_path, 4, again, pairs).run(seconds=3600)
    assert sum(again.seen.values()) == 600


def test_a_streamed_feedback_job_trains_one_matrix_and_names_its_model(tmp_path: Path) -> None:
    pairs = _pairs()
    linear = _job(tmp_path / "linear", HashingEmbedder(16), pairs).run(seconds=3600)
    feedback = _job(tmp_path / "fb", HashingEmbedder(16), pairs, FEEDBACK_MODEL).run(3600)
    assert linear.state is feedback.state is JobState.COMPLETED

    plain = LocalArtifactStore(tmp_path / "linear").load("adapter-x-1")
    fed = LocalArtifactStore(tmp_path / "fb").load("adapter-x-1")
    # The same matrix (the streamed path does not average members), another map over it.
    np.testing.assert_array_equal(plain.matrix, fed.matrix)
    assert plain.model == QueryModel()
    assert fed.model.kind == "feedback" and fed.model.members == 1
    assert fed.metrics["trainer"] == "feedback_adapter"
    assert isinstance(fed.query_map(_corpus().embeddings), FeedbackMap)
    assert fed.metrics["recall_after"] != plain.metrics["recall_after"]
