"""Adapter artifacts round-trip through a local folder and through S3 (moto)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import boto3
import numpy as np
import pytest
from deepmem.adapters.trainers.artifacts import (
    AdapterArtifact,
    ArtifactNotFoundError,
    ArtifactStoreError,
    LocalArtifactStore,
    S3ArtifactStore,
    active_query_map,
    artifact_store_for,
    latest_adapter,
)
from deepmem.adapters.trainers.query_maps import FEEDBACK_MODEL, FeedbackMap, LinearMap, QueryModel
from moto import mock_aws


def _artifact(job_id: str = "adapter-r1-1") -> AdapterArtifact:
    rng = np.random.default_rng(0)
    return AdapterArtifact(
        job_id=job_id,
        run_id="r1",
        matrix=rng.normal(size=(4, 4)).astype(np.float32),
        embedding_model="all-MiniLM-L6-v2",
        dimension=4,
        metrics={"recall_after": {"recall@10": 0.5}},
    )


def _assert_same(loaded: AdapterArtifact, saved: AdapterArtifact) -> None:
    assert np.array_equal(loaded.matrix, saved.matrix)
    assert loaded.metadata() == saved.metadata()


def test_local_folder_round_trip(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    saved = _artifact()
    where = store.save(saved)
    assert Path(where, "adapter.npy").exists() and Path(where, "adapter.json").exists()
    _assert_same(store.load(saved.job_id), saved)
    # Saving does not activate: only `activate` moves the pointer search reads.
    assert store.active_job_id() is None
    store.activate(saved.job_id)
    assert store.active_job_id() == saved.job_id
    store.save(_artifact("adapter-r2-1"))
    assert store.active_job_id() == saved.job_id
    with pytest.raises(ArtifactNotFoundError):
        store.load("adapter-other-1")
    with pytest.raises(ArtifactNotFoundError):
        store.load("../escape")


def test_s3_round_trip_under_moto() -> None:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="deepmem-artifacts")
        store = artifact_store_for("s3://deepmem-artifacts/adapters", s3_client=client)
        assert isinstance(store, S3ArtifactStore)
        assert store.active_job_id() is None
        saved = _artifact()
        assert store.save(saved) == "s3://deepmem-artifacts/adapters/adapter-r1-1/"
        assert store.active_job_id() is None
        store.activate(saved.job_id)
        keys = {o["Key"] for o in client.list_objects_v2(Bucket="deepmem-artifacts")["Contents"]}
        assert keys == {
            "adapters/adapter-r1-1/adapter.npy",
            "adapters/adapter-r1-1/adapter.json",
            "adapters/active.json",
        }
        _assert_same(store.load(saved.job_id), saved)
        assert store.active_job_id() == saved.job_id
        with pytest.raises(ArtifactNotFoundError):
            store.load("adapter-missing-1")


def test_an_artifact_written_before_model_kinds_loads_as_a_linear_map(tmp_path: Path) -> None:
    """The files an older deepmem wrote: a matrix and metadata without `query_model`."""
    folder = tmp_path / "artifacts" / "adapter-old-1"
    folder.mkdir(parents=True)
    matrix = np.diag([2.0, 1.0, 1.0, 1.0]).astype(np.float32)
    np.save(folder / "adapter.npy", matrix, allow_pickle=False)
    meta = {"job_id": "adapter-old-1", "run_id": "old", "embedding_model": "m", "dimension": 4}
    (folder / "adapter.json").write_text(json.dumps(meta | {"metrics": {}}))
    (tmp_path / "artifacts" / "latest.json").write_text(json.dumps({"job_id": "adapter-old-1"}))
    store = LocalArtifactStore(tmp_path / "artifacts")

    loaded = store.load("adapter-old-1")

    assert loaded.model == QueryModel()
    assert np.array_equal(loaded.matrix, matrix)
    latest = latest_adapter(store)
    assert latest is not None and np.array_equal(latest, matrix)
    mapped = active_query_map(store, np.eye(4, dtype=np.float32))
    assert isinstance(mapped, LinearMap)
    assert np.allclose(mapped.apply(np.array([1.0, 1.0, 0.0, 0.0])), [2, 1, 0, 0] / np.sqrt(5))


def test_a_feedback_artifact_keeps_its_model_and_maps_through_the_corpus(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    saved = replace(_artifact("feedback-r1-1"), model=FEEDBACK_MODEL)
    store.save(saved)
    corpus = np.eye(4, dtype=np.float32)

    loaded = store.load("feedback-r1-1")

    assert loaded.model == FEEDBACK_MODEL
    assert json.loads((tmp_path / "artifacts/feedback-r1-1/adapter.json").read_text())[
        "query_model"
    ] == {"kind": "feedback", "feedback_chunks": 2, "feedback_weight": 0.75, "members": 3}
    mapped = loaded.query_map(corpus)
    assert isinstance(mapped, FeedbackMap) and mapped.corpus is corpus
    query = np.array([0.3, 1.0, 0.2, 0.0], dtype=np.float32)
    assert not np.allclose(mapped.apply(query), LinearMap(saved.matrix).apply(query))
    with pytest.raises(ValueError, match="needs the corpus"):
        loaded.query_map()


def test_an_artifact_of_an_unknown_model_kind_is_a_store_error(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    where = Path(store.save(_artifact()))
    meta = json.loads((where / "adapter.json").read_text())
    (where / "adapter.json").write_text(json.dumps(meta | {"query_model": {"kind": "mlp"}}))
    with pytest.raises(ArtifactStoreError, match="unknown query model kind"):
        store.load("adapter-r1-1")


def test_a_store_from_before_the_guard_keeps_its_latest_adapter_active(tmp_path: Path) -> None:
    """`latest.json` (written by every save before the guard) is the active pointer until the
    first `activate`, so an upgrade does not silently drop the adapter search was using."""
    store = LocalArtifactStore(tmp_path)
    old = _artifact("adapter-old-1")
    store.save(old)
    (tmp_path / "latest.json").write_text('{"job_id": "adapter-old-1"}')
    assert store.active_job_id() == "adapter-old-1"
    store.save(_artifact("adapter-new-1"))
    store.activate("adapter-new-1")
    assert store.active_job_id() == "adapter-new-1"
