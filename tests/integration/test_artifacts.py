"""Adapter artifacts round-trip through a local folder and through S3 (moto)."""

from __future__ import annotations

from pathlib import Path

import boto3
import numpy as np
import pytest
from deepmem.adapters.trainers.artifacts import (
    AdapterArtifact,
    ArtifactNotFoundError,
    LocalArtifactStore,
    S3ArtifactStore,
    artifact_store_for,
)
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
