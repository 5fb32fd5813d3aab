"""QueryAdapterTrainer on a small local DeepLake dataset, artifacts in a folder, and search."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest
from deepmem.adapters.dataset.corpus import (
    CorpusSearch,
    dataset_embedding_model,
    evaluate_queries,
    load_corpus,
    search,
)
from deepmem.adapters.trainers.artifacts import (
    AdapterArtifact,
    LocalArtifactStore,
    active_query_map,
    latest_adapter,
)
from deepmem.adapters.trainers.query_adapter import QueryAdapterTrainer
from deepmem.adapters.trainers.query_maps import FEEDBACK_MODEL, FeedbackMap
from deepmem.domain.errors import NotEnoughPairsError
from deepmem.domain.models import TrainingPair, TrainingRun
from deepmem.domain.status import RunStatus
from deepmem.ports import JobState

from tests.fakes.embedder_small import TableEmbedder, write_planted_dataset

DIM, CHUNKS = 24, 300


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, TableEmbedder, list[str]]:
    """A dataset whose questions are a fixed linear distortion of their chunk's vector."""
    path = str(tmp_path_factory.mktemp("ds") / "dataset")
    embedder, asked = write_planted_dataset(path, chunks=CHUNKS, dim=DIM)
    return path, embedder, asked


def _run() -> TrainingRun:
    now = datetime.now(UTC)
    return TrainingRun(
        id=uuid4(), dataset="local", status=RunStatus.TRAINING, created_at=now, updated_at=now
    )


def _pairs(run: TrainingRun, asked: list[str], n: int) -> list[TrainingPair]:
    now = datetime.now(UTC)
    return [
        TrainingPair(id=i, run_id=run.id, chunk_id=f"id-{i}", question=asked[i], created_at=now)
        for i in range(n)
    ]


def test_trains_stores_and_reports_recall(
    planted: tuple[str, TableEmbedder, list[str]], tmp_path: Path
) -> None:
    path, embedder, asked = planted
    store = LocalArtifactStore(tmp_path / "artifacts")
    trainer = QueryAdapterTrainer(path, embedder, store)
    run = _run()
    pairs = [*_pairs(run, asked, CHUNKS), _pairs(run, ["what about chunk 0?"], 1)[0]]
    pairs.append(pairs[0].model_copy(update={"chunk_id": "not-in-dataset"}))

    job_id = trainer.submit(run, pairs)

    assert job_id == f"adapter-{run.id}-1"
    status = trainer.check(job_id)
    assert status.state is JobState.COMPLETED
    metrics = status.metrics
    assert metrics["pairs_dropped"] == 1
    assert metrics["heldout_questions"] == round(0.2 * metrics["questions"])
    assert metrics["recall_after"]["recall@1"] > metrics["recall_before"]["recall@1"] + 0.3
    guard = metrics["guard"]
    # The guard's questions are none of training's: together they are the 300 asked.
    assert metrics["questions"] + guard["questions"] == CHUNKS
    assert metrics["applied"] is True and guard["applied"] is True
    assert guard["after"]["recall@10"] > guard["before"]["recall@10"]
    assert guard["previous"] is None and guard["vs_base"]["interval"][0] > 0
    assert store.active_job_id() == job_id
    artifact = store.load(job_id)
    assert artifact.dimension == DIM and artifact.embedding_model == "table-embedder"
    assert artifact.run_id == str(run.id)

    # A retried submit of the same attempt finds the artifact and trains nothing.
    calls = embedder.calls
    assert trainer.submit(run, pairs) == job_id
    assert embedder.calls == calls

    # Search with the adapter finds a distorted question's chunk; without it, less often.
    corpus = load_corpus(path)
    hits = search(asked[7], embedder=embedder, corpus=corpus, adapter=artifact.matrix, k=3)
    assert hits[0].id == "id-7" and hits[0].text == "chunk 7 text"
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score

    def found(adapter: np.ndarray | None) -> int:
        return sum(
            search(asked[i], embedder=embedder, corpus=corpus, adapter=adapter, k=1)[0].id
            == f"id-{i}"
            for i in range(40)
        )

    assert found(artifact.matrix) > found(None) + 10
    assert dataset_embedding_model(path) == "table-embedder"


def test_refuses_too_few_pairs_and_reports_a_missing_artifact_as_failed(
    planted: tuple[str, TableEmbedder, list[str]], tmp_path: Path
) -> None:
    path, embedder, asked = planted
    trainer = QueryAdapterTrainer(path, embedder, LocalArtifactStore(tmp_path))
    run = _run()
    with pytest.raises(NotEnoughPairsError, match="got 5 from 5 pairs"):
        trainer.submit(run, _pairs(run, asked, 5))
    status = trainer.check(f"adapter-{run.id}-1")
    assert status.state is JobState.FAILED and "never completed" in (status.error or "")


def test_evaluate_queries_with_and_without_the_adapter(
    planted: tuple[str, TableEmbedder, list[str]], tmp_path: Path
) -> None:
    path, embedder, asked = planted
    store = LocalArtifactStore(tmp_path)
    trainer = QueryAdapterTrainer(path, embedder, store)
    run = _run()
    matrix = store.load(trainer.submit(run, _pairs(run, asked, CHUNKS))).matrix
    corpus = load_corpus(path)
    judged = [[f"id-{i}"] for i in range(50)] + [["gone"]]

    report = evaluate_queries(corpus, embedder, asked[:51], judged, adapter=matrix)

    assert report["queries"] == 50 and report["skipped"] == 1
    assert report["adapter"]["recall@1"] > report["base"]["recall@1"] + 0.3
    assert report["relative_gain"]["recall@1"] > 0


def test_the_feedback_trainer_stores_its_model_and_search_applies_it(
    planted: tuple[str, TableEmbedder, list[str]], tmp_path: Path
) -> None:
    path, embedder, asked = planted
    store = LocalArtifactStore(tmp_path / "artifacts")
    trainer = QueryAdapterTrainer(path, embedder, store, model=FEEDBACK_MODEL)
    run = _run()

    job_id = trainer.submit(run, _pairs(run, asked, CHUNKS))

    assert job_id == f"feedback-{run.id}-1"
    status = trainer.check(job_id)
    assert status.state is JobState.COMPLETED
    assert status.metrics["trainer"] == "feedback_adapter"
    assert status.metrics["query_model"] == FEEDBACK_MODEL.as_dict()
    assert store.load(job_id).model == FEEDBACK_MODEL
    corpus = load_corpus(path)
    mapped = active_query_map(store, corpus.embeddings)
    assert isinstance(mapped, FeedbackMap)
    found = CorpusSearch(corpus, embedder, mapped)
    report = found.evaluate(asked[:50], [[f"id-{i}"] for i in range(50)])
    assert report["adapter"]["recall@10"] > report["base"]["recall@10"]
    hits = found.search(asked[7], k=3)
    assert hits[0].id == "id-7"


def _found(path: str, embedder: TableEmbedder, asked: list[str], adapter: np.ndarray | None) -> int:
    corpus = load_corpus(path)
    return sum(
        search(asked[i], embedder=embedder, corpus=corpus, adapter=adapter, k=1)[0].id == f"id-{i}"
        for i in range(CHUNKS)
    )


def test_the_guard_refuses_an_adapter_trained_on_shuffled_pairs_and_search_keeps_the_active(
    planted: tuple[str, TableEmbedder, list[str]], tmp_path: Path
) -> None:
    path, embedder, asked = planted
    store = LocalArtifactStore(tmp_path)
    trainer = QueryAdapterTrainer(path, embedder, store)
    good_run = _run()
    good = trainer.submit(good_run, _pairs(good_run, asked, CHUNKS))
    assert trainer.check(good).metrics["applied"] is True
    active = store.load(good).matrix

    # Every question paired with another chunk: the map learnt is noise for real questions.
    bad_run = _run()
    order = np.random.default_rng(3).permutation(CHUNKS)
    shuffled = [
        p.model_copy(update={"chunk_id": f"id-{order[i]}"})
        for i, p in enumerate(_pairs(bad_run, asked, CHUNKS))
    ]
    bad = trainer.submit(bad_run, shuffled)
    status = trainer.check(bad)

    assert status.state is JobState.COMPLETED  # the run completes, the adapter is not used
    guard = status.metrics["guard"]
    assert status.metrics["applied"] is False and guard["applied"] is False
    assert "does not beat" in guard["reason"]
    assert guard["previous"]["job_id"] == good
    assert (
        set(guard["before"])
        == set(guard["after"])
        == {
            "recall@1",
            "recall@5",
            "recall@10",
            "ndcg@10",
        }
    )
    assert guard["vs_base"]["wins"] is False or guard["vs_previous"]["wins"] is False
    assert store.active_job_id() == good
    kept = latest_adapter(store)
    assert kept is not None and np.array_equal(kept, active)
    # Search with what is kept still finds the planted chunks; the refused map would not.
    assert (
        _found(path, embedder, asked, kept)
        > _found(path, embedder, asked, store.load(bad).matrix) + 50
    )


def test_an_adapter_that_beats_the_active_one_replaces_it(
    planted: tuple[str, TableEmbedder, list[str]], tmp_path: Path
) -> None:
    path, embedder, asked = planted
    store = LocalArtifactStore(tmp_path)
    weak = np.eye(DIM, dtype=np.float32) + np.random.default_rng(5).normal(
        scale=0.8, size=(DIM, DIM)
    ).astype(np.float32)
    store.save(AdapterArtifact("adapter-weak-1", "weak", weak, "table-embedder", DIM))
    store.activate("adapter-weak-1")
    trainer = QueryAdapterTrainer(path, embedder, store)
    run = _run()

    job_id = trainer.submit(run, _pairs(run, asked, CHUNKS))
    metrics = trainer.check(job_id).metrics

    guard = metrics["guard"]
    assert guard["applied"] is True and guard["previous"]["job_id"] == "adapter-weak-1"
    assert guard["vs_previous"]["wins"] is True
    assert guard["after"]["recall@10"] > guard["previous"]["recall@10"]
    assert store.active_job_id() == job_id
