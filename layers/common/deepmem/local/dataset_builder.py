"""Build a DeepLake dataset in the VectorStore layout from a folder of documents.

`.md` and `.txt` files are one document each; a `.jsonl` file holds one document per line
(`{"text": ..., "id"?: ..., "metadata"?: {...}}`). Documents are cut into overlapping chunks
on sentence (and, for over-long sentences, word) boundaries, embedded in batches and written
with the tensors DeepLake's `VectorStore` creates (`text`, `metadata`, `embedding`, `id`), so
the dataset works with `VectorStore` and Deep Memory as well as with deepmem.

Chunk ids are stable: rebuilding the same corpus gives the same ids, which is what resuming a
run by chunk identity relies on. A dataset records the fingerprint of what it holds (every
chunk's id and text, the chunking and the embedding model), so building the same corpus again
reuses it instead of embedding every chunk anew.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepmem.domain.errors import DatasetError, EmbeddingError
from deepmem.domain.text import DEFAULT_CHUNK_SIZE, DEFAULT_OVERLAP, HEADING, chunk_id, chunk_text
from deepmem.ports import Embedder

EMBED_BATCH = 128  # chunks embedded and written together
DOCUMENT_SUFFIXES = frozenset({".md", ".txt", ".jsonl"})

#: Progress callback: (chunks written so far, chunks to write).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Document:
    source: str  # path relative to the corpus folder, POSIX style
    key: str  # which document of the source ("" for a whole file, the line for jsonl)
    text: str
    doc_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuiltChunk:
    id: str
    text: str
    metadata: dict[str, Any]


def iter_documents(corpus_dir: Path) -> Iterator[Document]:
    """Documents of every `.md`/`.txt`/`.jsonl` file under `corpus_dir`, in path order."""
    if not corpus_dir.is_dir():
        raise DatasetError(f"corpus folder '{corpus_dir}' does not exist")
    files = sorted(
        (p for p in corpus_dir.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES),
        key=lambda p: p.relative_to(corpus_dir).as_posix(),
    )
    for path in files:
        source = path.relative_to(corpus_dir).as_posix()
        try:
            content = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise DatasetError(f"cannot read '{path}': {exc}") from exc
        if path.suffix.lower() != ".jsonl":
            yield Document(source=source, key="", text=content, metadata=_title_of(content, path))
            continue
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            yield _jsonl_document(source, number, line)


def _title_of(content: str, path: Path) -> dict[str, Any]:
    for line in content.splitlines():
        heading = HEADING.match(line)
        if heading:
            return {"title": heading.group(1)}
        if line.strip():
            break
    return {"title": path.stem.replace("_", " ").replace("-", " ")}


def _jsonl_document(source: str, number: int, line: str) -> Document:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{source}:{number}: not a JSON object: {exc.msg}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise DatasetError(f"{source}:{number}: a line needs a string field 'text'")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise DatasetError(f"{source}:{number}: 'metadata' must be an object")
    doc_id = record.get("id")
    return Document(
        source=source,
        key=f"line {number}",
        text=record["text"],
        doc_id=None if doc_id is None or doc_id == "" else str(doc_id),
        metadata=metadata,
    )


def iter_chunks(
    corpus_dir: Path,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    limit: int | None = None,
) -> Iterator[BuiltChunk]:
    """The chunks `build_dataset` writes, in order, with their stable ids and metadata."""
    produced = 0
    seen: set[str] = set()
    for document in iter_documents(corpus_dir):
        pieces = chunk_text(document.text, chunk_size, overlap)
        for index, text in enumerate(pieces):
            if limit is not None and produced >= limit:
                return
            if document.doc_id is None:
                identifier = chunk_id(document.source, document.key, index, text)
            elif len(pieces) == 1:
                identifier = document.doc_id
            else:
                identifier = f"{document.doc_id}#{index}"
            if identifier in seen:
                # Resume is by chunk id: two chunks under one id would be processed as one.
                raise DatasetError(f"{document.source}: duplicate chunk id '{identifier}'")
            seen.add(identifier)
            metadata = {
                **document.metadata,
                "source": document.source,
                "chunk_index": index,
            }
            if document.doc_id is not None:
                metadata.setdefault("doc_id", document.doc_id)
            yield BuiltChunk(id=identifier, text=text, metadata=metadata)
            produced += 1


# The tensors DeepLake's VectorStore creates (deeplake.constants.DEFAULT_VECTORSTORE_TENSORS).
def _vectorstore_tensors() -> list[dict[str, Any]]:
    import numpy as np

    plain = {
        "create_id_tensor": False,
        "create_sample_info_tensor": False,
        "create_shape_tensor": False,
    }
    return [
        {"name": "text", "htype": "text", **plain},
        {"name": "metadata", "htype": "json", **plain},
        {
            "name": "embedding",
            "htype": "embedding",
            "dtype": np.float32,
            "create_id_tensor": False,
            "create_sample_info_tensor": False,
            "create_shape_tensor": True,
            "max_chunk_size": 64 * 1024 * 1024,
        },
        {"name": "id", "htype": "text", **plain},
    ]


@dataclass(frozen=True)
class BuiltDataset:
    path: str
    chunks: int
    fingerprint: str
    reused: bool  # the dataset at `path` already held exactly these chunks: nothing embedded


def fingerprint(
    chunks: Sequence[BuiltChunk], embedder: Embedder, chunk_size: int, overlap: int
) -> str:
    """What a dataset holds, as one digest: the same corpus, chunking and model give the same."""
    digest = hashlib.sha256()
    header = json.dumps([embedder.model_name, embedder.dimension, chunk_size, overlap])
    digest.update(header.encode())
    for chunk in chunks:
        for part in (chunk.id, chunk.text, json.dumps(chunk.metadata, sort_keys=True)):
            digest.update(b"\x1f" + part.encode("utf-8"))
    return digest.hexdigest()


def recorded_fingerprint(path: str, token: str | None = None) -> str | None:
    """The fingerprint a dataset built here recorded, or None (no dataset, or not ours)."""
    from deepmem.adapters.dataset.deeplake import open_dataset

    try:
        info = open_dataset(path, token).info
    except DatasetError:
        return None
    value = info.get("fingerprint") if hasattr(info, "get") else None
    return str(value) if value else None


def ensure_dataset(
    corpus_dir: Path,
    path: str,
    embedder: Embedder,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    limit: int | None = None,
    progress: Progress | None = None,
    token: str | None = None,
    reuse: bool = True,
) -> BuiltDataset:
    """The dataset of `corpus_dir` at `path`: with `reuse`, the one already there when it holds
    exactly these chunks embedded by this model; else built anew (overwriting it)."""
    chunks = list(iter_chunks(corpus_dir, chunk_size=chunk_size, overlap=overlap, limit=limit))
    if not chunks:
        raise DatasetError(f"no text to index under '{corpus_dir}' (.md, .txt or .jsonl files)")
    wanted = fingerprint(chunks, embedder, chunk_size, overlap)
    if reuse and recorded_fingerprint(path, token) == wanted:
        if progress is not None:
            progress(len(chunks), len(chunks))
        return BuiltDataset(path, len(chunks), wanted, reused=True)
    count = _write_dataset(
        chunks,
        path,
        embedder,
        chunk_size=chunk_size,
        overlap=overlap,
        digest=wanted,
        progress=progress,
        token=token,
    )
    return BuiltDataset(path, count, wanted, reused=False)


def build_dataset(
    corpus_dir: Path,
    path: str,
    embedder: Embedder,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    limit: int | None = None,
    progress: Progress | None = None,
    token: str | None = None,
) -> int:
    """Chunk, embed and write the corpus to a new dataset at `path` (an existing dataset
    there is overwritten). Return the number of chunks written."""
    built = ensure_dataset(
        corpus_dir,
        path,
        embedder,
        chunk_size=chunk_size,
        overlap=overlap,
        limit=limit,
        progress=progress,
        token=token,
        reuse=False,
    )
    return built.chunks


def _write_dataset(
    chunks: Sequence[BuiltChunk],
    path: str,
    embedder: Embedder,
    *,
    chunk_size: int,
    overlap: int,
    digest: str,
    progress: Progress | None,
    token: str | None,
) -> int:
    import numpy as np

    from deepmem.adapters.dataset.deeplake import import_deeplake

    deeplake = import_deeplake()
    try:
        dataset = deeplake.empty(path, overwrite=True, token=token, verbose=False)
        for spec in _vectorstore_tensors():
            dataset.create_tensor(**spec)
        dataset.info.update(
            embedding_model=embedder.model_name,
            embedding_dimension=embedder.dimension,
            chunk_size=chunk_size,
            overlap=overlap,
        )
    except Exception as exc:
        raise DatasetError(f"cannot create a DeepLake dataset at '{path}': {exc}") from exc

    written = 0
    for start in range(0, len(chunks), EMBED_BATCH):
        batch = chunks[start : start + EMBED_BATCH]
        vectors = _embed(embedder, [c.text for c in batch])
        try:
            with dataset:
                dataset.extend(
                    {
                        "text": [c.text for c in batch],
                        "metadata": [c.metadata for c in batch],
                        "embedding": np.asarray(vectors, dtype=np.float32),
                        "id": [c.id for c in batch],
                    }
                )
        except Exception as exc:
            raise DatasetError(f"cannot write chunks to '{path}': {exc}") from exc
        written += len(batch)
        if progress is not None:
            progress(written, len(chunks))
    try:
        # Last, so a build cut short is never mistaken for a whole one.
        dataset.info.update(fingerprint=digest)
    except Exception as exc:
        raise DatasetError(f"cannot record the fingerprint of '{path}': {exc}") from exc
    return written


def _embed(embedder: Embedder, texts: Sequence[str]) -> list[list[float]]:
    vectors = embedder.embed(texts)
    if len(vectors) != len(texts) or any(len(v) != embedder.dimension for v in vectors):
        raise EmbeddingError(
            f"the embedder returned {len(vectors)} vectors for {len(texts)} texts "
            f"(expected {embedder.dimension} dimensions each)"
        )
    return vectors
