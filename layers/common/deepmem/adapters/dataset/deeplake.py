"""A ChunkSource over a DeepLake 3.x dataset in the VectorStore layout (`id`, `text`,
`metadata`, `embedding`), read by index ranges through the dataset API.

DeepLake's `VectorStore` constructor calls the Activeloop API and retries forever when the
network is unreachable, so reads never construct one: they slice the tensors directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import types
from typing import Any

from deepmem.domain.chunks import Chunk
from deepmem.domain.errors import DatasetError

REQUIRED_TENSORS = ("id", "text")
_ID_BLOCK = 10_000
_UPDATE_CHECK_MODULE = "deeplake.util.check_latest_version"


def _no_update_check(current_version: str) -> None:
    """Stands in for DeepLake's import-time PyPI version check."""


def import_deeplake() -> types.ModuleType:
    """Import `deeplake` so that importing it makes no network call.

    - `BUGGER_OFF=true` turns off DeepLake's usage reporting (humbug).
    - At import DeepLake asks PyPI for its latest version (a 2 s timeout, skipped only when
      `~/.activeloop` holds a fresh cached answer, which a Lambda or a fresh machine does not
      have). A stub of that one module, put in `sys.modules` before the first import, makes
      the check a no-op without touching HOME or the network.
    Idempotent; when `deeplake` was already imported elsewhere it is returned as is.
    """
    os.environ["BUGGER_OFF"] = "true"
    if "deeplake" not in sys.modules and _UPDATE_CHECK_MODULE not in sys.modules:
        stub = types.ModuleType(_UPDATE_CHECK_MODULE)
        stub.warn_if_update_required = _no_update_check  # type: ignore[attr-defined]
        sys.modules[_UPDATE_CHECK_MODULE] = stub
    try:
        import deeplake
    except ImportError as exc:
        raise DatasetError(
            "reading a DeepLake dataset needs the 'deeplake' package (3.x) in this environment"
        ) from exc
    return deeplake


def open_dataset(path: str, token: str | None = None, *, read_only: bool = True) -> Any:
    """`deeplake.load` with DeepLake's errors turned into DatasetError."""
    deeplake = import_deeplake()
    try:
        # A local path is checked first for a clearer message; a remote one would cost an
        # extra round trip, and load() reports a missing remote dataset itself.
        if "://" not in path and not deeplake.exists(path):
            raise DatasetError(f"no DeepLake dataset at '{path}'")
        return deeplake.load(path, read_only=read_only, token=token, verbose=False)
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"cannot open the DeepLake dataset '{path}': {exc}") from exc


def _as_metadata(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if value is None or value == "":
        return {}
    # Keep a non-object value rather than lose it: Chunk.metadata is always a dict.
    return {"value": value}


class DeepLakeChunkSource:
    """Implements the ChunkSource port. The dataset is opened on first use and kept, so a
    Lambda that is reused reads without opening it again."""

    def __init__(self, path: str, token: str | None = None) -> None:
        self._path = path
        self._token = token
        self._dataset: Any = None
        self._has_metadata = False
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        return self._path

    def count(self) -> int:
        dataset = self._open()
        try:
            return int(min(len(dataset[name]) for name in self._tensor_names()))
        except Exception as exc:
            raise DatasetError(f"cannot count the chunks of '{self._path}': {exc}") from exc

    def fingerprint(self) -> str:
        """sha256 of the dataset's version (its commit ids, and the fingerprint our dataset
        builder records of the texts) and every chunk id in order, read in blocks."""
        dataset = self._open()
        total = self.count()
        try:
            info = dataset.info
            version = [
                getattr(dataset, "commit_id", None),
                getattr(dataset, "pending_commit_id", None),
                info.get("fingerprint") if hasattr(info, "get") else None,
                total,
            ]
            digest = hashlib.sha256(json.dumps(version, default=str).encode())
            for start in range(0, total, _ID_BLOCK):
                for chunk_id in self._column(dataset, "id", start, min(total, start + _ID_BLOCK)):
                    digest.update(b"\x1f" + chunk_id.encode("utf-8"))
        except Exception as exc:
            raise DatasetError(f"cannot fingerprint '{self._path}': {exc}") from exc
        return digest.hexdigest()

    def read(self, start: int, stop: int) -> list[Chunk]:
        if start < 0 or stop < start:
            raise ValueError(f"invalid chunk range [{start}, {stop})")
        stop = min(stop, self.count())
        if start >= stop:
            return []
        dataset = self._open()
        try:
            ids = self._column(dataset, "id", start, stop)
            texts = self._column(dataset, "text", start, stop)
            metadata = (
                self._column(dataset, "metadata", start, stop)
                if self._has_metadata
                else [None] * (stop - start)
            )
        except Exception as exc:
            raise DatasetError(
                f"cannot read chunks [{start}, {stop}) of '{self._path}': {exc}"
            ) from exc
        chunks: list[Chunk] = []
        for offset, (chunk_id, text, meta) in enumerate(zip(ids, texts, metadata, strict=True)):
            if not chunk_id:
                raise DatasetError(f"chunk {start + offset} of '{self._path}' has an empty id")
            chunks.append(Chunk(id=chunk_id, text=text, metadata=_as_metadata(meta)))
        return chunks

    def close(self) -> None:
        """Forget the opened dataset (the next call opens it again)."""
        with self._lock:
            self._dataset = None

    def _tensor_names(self) -> tuple[str, ...]:
        return (*REQUIRED_TENSORS, "metadata") if self._has_metadata else REQUIRED_TENSORS

    @staticmethod
    def _column(dataset: Any, name: str, start: int, stop: int) -> list[Any]:
        # Only the chunks covering [start, stop) are fetched from storage.
        values = dataset[name][start:stop].data()["value"]
        if name == "metadata":
            return list(values)
        return [str(value) for value in values]

    def _open(self) -> Any:
        if self._dataset is not None:
            return self._dataset
        with self._lock:
            if self._dataset is None:
                dataset = open_dataset(self._path, self._token)
                tensors = set(dataset.tensors)
                missing = [name for name in REQUIRED_TENSORS if name not in tensors]
                if missing:
                    raise DatasetError(
                        f"the DeepLake dataset '{self._path}' has no tensor(s) "
                        f"{', '.join(missing)}; a VectorStore-layout dataset has "
                        f"id, text, embedding and metadata (found: {', '.join(sorted(tensors))})"
                    )
                for name in REQUIRED_TENSORS:
                    htype = dataset[name].htype
                    if htype != "text":
                        raise DatasetError(
                            f"tensor '{name}' of '{self._path}' is '{htype}', expected 'text'"
                        )
                self._has_metadata = "metadata" in tensors
                self._dataset = dataset
            return self._dataset
