"""Where trained query adapters are kept: a local folder (embedded default) or S3.

One artifact per training job, under `<location>/<job_id>/`:
- `adapter.npy`: the d-by-d matrix (float32), readable with `numpy.load` alone;
- `adapter.json`: the embedding model's name, the dimension, the run id, the metrics and the
  query model (`query_maps.QueryModel`: its kind and constants; an artifact written before
  there were kinds has none and is linear).
`active.json` at the root names the job whose adapter search uses (`activate`, written only
when the trainer's guard applied it). Saving an artifact does not activate it. A store written
before the guard has only `latest.json` (every adapter saved was then used): it still counts
as the active pointer until the first `activate`.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from deepmem.adapters.trainers.query_maps import QueryMap, QueryModel, query_map
from deepmem.domain.errors import DeepmemError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MATRIX_FILE = "adapter.npy"
META_FILE = "adapter.json"
LATEST_FILE = "latest.json"  # the active pointer of stores written before the guard
ACTIVE_FILE = "active.json"


class ArtifactNotFoundError(DeepmemError):
    """No adapter artifact exists for that job."""


class ArtifactStoreError(DeepmemError):
    """The artifact store could not be read or written."""


@dataclass(frozen=True)
class AdapterArtifact:
    job_id: str
    run_id: str
    matrix: np.ndarray
    embedding_model: str
    dimension: int
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    model: QueryModel = field(default_factory=QueryModel)

    def metadata(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "run_id": self.run_id,
            "embedding_model": self.embedding_model,
            "dimension": self.dimension,
            "metrics": self.metrics,
            "created_at": self.created_at,
            "query_model": self.model.as_dict(),
        }

    def query_map(self, corpus: np.ndarray | None = None) -> QueryMap:
        """What search applies to a query with this adapter; `corpus` (the chunk embeddings,
        rows L2-normalised) is needed by a feedback model."""
        return query_map(self.model, self.matrix, corpus)


class ArtifactStore(Protocol):
    def save(self, artifact: AdapterArtifact) -> str:
        """Store the artifact; return where it lives."""
        ...

    def load(self, job_id: str) -> AdapterArtifact:
        """Raise ArtifactNotFoundError when there is none for `job_id`."""
        ...

    def active_job_id(self) -> str | None:
        """The job whose adapter search uses, or None when none was applied."""
        ...

    def activate(self, job_id: str) -> None:
        """Make the (saved) adapter of `job_id` the one search uses."""
        ...

    def put_blob(self, job_id: str, name: str, data: bytes) -> None:
        """A job's working file (embedding shards, checkpoints), written whole or not at all."""
        ...

    def get_blob(self, job_id: str, name: str) -> bytes | None:
        """A working file of the job, or None when it was never written."""
        ...


def active_artifact(store: ArtifactStore) -> AdapterArtifact | None:
    """The active adapter's artifact, or None when none was applied (or it is gone)."""
    job_id = store.active_job_id()
    if job_id is None:
        return None
    try:
        return store.load(job_id)
    except ArtifactNotFoundError:
        return None


def active_query_map(store: ArtifactStore, corpus: np.ndarray) -> QueryMap | None:
    """The active adapter's query map over `corpus` (the chunk embeddings), or None."""
    artifact = active_artifact(store)
    return None if artifact is None else artifact.query_map(corpus)


def latest_adapter(store: ArtifactStore) -> np.ndarray | None:
    """The matrix of the active adapter (the last one the guard applied), or None."""
    artifact = active_artifact(store)
    return None if artifact is None else artifact.matrix


def _matrix_bytes(matrix: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(matrix, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def _artifact(meta: dict[str, Any], matrix_bytes: bytes) -> AdapterArtifact:
    matrix = np.load(io.BytesIO(matrix_bytes), allow_pickle=False)
    if matrix.shape != (meta["dimension"], meta["dimension"]):
        raise ArtifactStoreError(
            f"adapter of job {meta['job_id']} is {matrix.shape}, its metadata says "
            f"dimension {meta['dimension']}"
        )
    return AdapterArtifact(
        job_id=meta["job_id"],
        run_id=meta["run_id"],
        matrix=matrix,
        embedding_model=meta["embedding_model"],
        dimension=int(meta["dimension"]),
        metrics=meta.get("metrics", {}),
        created_at=meta.get("created_at", ""),
        model=QueryModel.from_dict(meta.get("query_model")),
    )


def _check_job_id(job_id: str) -> str:
    # The job id becomes a path segment: refuse anything that could climb out of the root.
    if not job_id or "/" in job_id or "\\" in job_id or job_id.startswith("."):
        raise ArtifactNotFoundError(f"invalid adapter job id {job_id!r}")
    return job_id


class LocalArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        # Write then rename, so a reader never sees half a matrix.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def save(self, artifact: AdapterArtifact) -> str:
        folder = self.root / _check_job_id(artifact.job_id)
        try:
            self._write_atomic(folder / MATRIX_FILE, _matrix_bytes(artifact.matrix))
            # Metadata last: its presence means the artifact is whole.
            self._write_atomic(folder / META_FILE, json.dumps(artifact.metadata()).encode())
        except OSError as exc:
            raise ArtifactStoreError(f"cannot write adapter to {folder}: {exc}") from exc
        return str(folder)

    def load(self, job_id: str) -> AdapterArtifact:
        folder = self.root / _check_job_id(job_id)
        try:
            meta = json.loads((folder / META_FILE).read_text())
            return _artifact(meta, (folder / MATRIX_FILE).read_bytes())
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(
                f"no adapter artifact for job {job_id} in {self.root}"
            ) from exc
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactStoreError(f"cannot read adapter of job {job_id}: {exc}") from exc

    def put_blob(self, job_id: str, name: str, data: bytes) -> None:
        path = self.root / _check_job_id(job_id) / "work" / _check_job_id(name)
        try:
            self._write_atomic(path, data)
        except OSError as exc:
            raise ArtifactStoreError(f"cannot write {path}: {exc}") from exc

    def get_blob(self, job_id: str, name: str) -> bytes | None:
        path = self.root / _check_job_id(job_id) / "work" / _check_job_id(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArtifactStoreError(f"cannot read {path}: {exc}") from exc

    def activate(self, job_id: str) -> None:
        body = json.dumps({"job_id": _check_job_id(job_id)}).encode()
        try:
            self._write_atomic(self.root / ACTIVE_FILE, body)
        except OSError as exc:
            raise ArtifactStoreError(f"cannot write {self.root / ACTIVE_FILE}: {exc}") from exc

    def active_job_id(self) -> str | None:
        for name in (ACTIVE_FILE, LATEST_FILE):
            try:
                return str(json.loads((self.root / name).read_text())["job_id"])
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError) as exc:
                raise ArtifactStoreError(f"cannot read {self.root / name}: {exc}") from exc
        return None


class S3ArtifactStore:
    def __init__(self, bucket: str, prefix: str = "", client: S3Client | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ArtifactNotFoundError(f"no s3://{self.bucket}/{key}") from exc
            raise ArtifactStoreError(f"cannot read s3://{self.bucket}/{key}: {exc}") from exc

    def save(self, artifact: AdapterArtifact) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        job_id = _check_job_id(artifact.job_id)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(job_id, MATRIX_FILE),
                Body=_matrix_bytes(artifact.matrix),
                ContentType="application/octet-stream",
            )
            # Metadata last: its presence means the artifact is whole.
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(job_id, META_FILE),
                Body=json.dumps(artifact.metadata()).encode(),
                ContentType="application/json",
            )
        except (BotoCoreError, ClientError) as exc:
            raise ArtifactStoreError(f"cannot write adapter to s3://{self.bucket}: {exc}") from exc
        return f"s3://{self.bucket}/{self._key(job_id)}/"

    def load(self, job_id: str) -> AdapterArtifact:
        from botocore.exceptions import BotoCoreError

        _check_job_id(job_id)
        try:
            meta = json.loads(self._get(self._key(job_id, META_FILE)))
            return _artifact(meta, self._get(self._key(job_id, MATRIX_FILE)))
        except BotoCoreError as exc:
            raise ArtifactStoreError(f"cannot read adapter of job {job_id}: {exc}") from exc
        except (ValueError, KeyError) as exc:
            raise ArtifactStoreError(f"adapter of job {job_id} is malformed: {exc}") from exc

    def activate(self, job_id: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(ACTIVE_FILE)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=json.dumps({"job_id": _check_job_id(job_id)}).encode(),
                ContentType="application/json",
            )
        except (BotoCoreError, ClientError) as exc:
            raise ArtifactStoreError(f"cannot write s3://{self.bucket}/{key}: {exc}") from exc

    def active_job_id(self) -> str | None:
        for name in (ACTIVE_FILE, LATEST_FILE):
            try:
                return str(json.loads(self._get(self._key(name)))["job_id"])
            except ArtifactNotFoundError:
                continue
            except (ValueError, KeyError) as exc:
                raise ArtifactStoreError(f"{name} in s3://{self.bucket} is malformed") from exc
        return None

    def put_blob(self, job_id: str, name: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(_check_job_id(job_id), "work", _check_job_id(name))
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise ArtifactStoreError(f"cannot write s3://{self.bucket}/{key}: {exc}") from exc

    def get_blob(self, job_id: str, name: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError

        key = self._key(_check_job_id(job_id), "work", _check_job_id(name))
        try:
            return self._get(key)
        except ArtifactNotFoundError:
            return None
        except BotoCoreError as exc:
            raise ArtifactStoreError(f"cannot read s3://{self.bucket}/{key}: {exc}") from exc


def artifact_store_for(location: str, s3_client: S3Client | None = None) -> ArtifactStore:
    """`s3://bucket/prefix` → S3, anything else → a local folder."""
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://") :].partition("/")
        return S3ArtifactStore(bucket, prefix, client=s3_client)
    return LocalArtifactStore(location)
