"""The streamed query-adapter job on synthetic embeddings: it embeds every question once, in
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
from deepmem.adapters.trainers.adapter_job import GUARD_PAIRS, StreamConfig, StreamedAdapterJob
from deepmem.adapters.trainers.adapter_maths import normalize
from deepmem.adapters.trainers.artifacts import LocalArtifactStore
from deepmem.adapters.trainers.guard import GuardConfig, split_pairs
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


def _job(tmp: Path, embedder: HashingEmbedder, pairs: list[TrainingPair]) -> StreamedAdapterJob:
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
        LocalArtifactStore(tmp_path / "sliced").get_blob("adapter-x-1", GUARD_PAIRS) or b""
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
