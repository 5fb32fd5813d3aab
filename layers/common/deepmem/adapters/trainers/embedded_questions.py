"""A run's embedded questions, kept in the artifact store across its attempts.

A streamed adapter job's files are its own (`adapter-<run>-<attempt>/work/`), so that a
proceed trains afresh; but the questions' embeddings do not depend on the attempt. Each page
of pairs the job embeds is kept under the run (`embedded-<run>/work/questions-<key>.npz`),
named by a fingerprint of what the embeddings are made of: the embedding model's name and
dimension, and every pair of the page (id and question). A later attempt reading the same
page with the same model finds the same name and reuses the file; any change (another model,
a page that starts or ends elsewhere, a pair whose text differs) gives another name, so
nothing is ever reused across a change. A file that does not hold what its name says (its
own fingerprint, model or shape disagree: a partial copy, another writer) is embedded again
and replaced.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from deepmem.adapters.dataset.corpus import embed_questions
from deepmem.adapters.trainers.adapter_maths import QuestionSet

if TYPE_CHECKING:
    from deepmem.adapters.trainers.artifacts import ArtifactStore
    from deepmem.domain.models import TrainingPair
    from deepmem.ports import Embedder

RUN_FOLDER_PREFIX = "embedded-"


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def load_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


#: A question set, or a shard's rows into a page, as one npz file (a streamed job's files).
def pack(questions: QuestionSet) -> bytes:
    offsets = np.cumsum([0] + [len(p) for p in questions.positives]).astype(np.int64)
    flat = np.array([r for p in questions.positives for r in p], dtype=np.int64)
    return npz(embeddings=questions.embeddings, offsets=offsets, positives=flat)


def pack_rows(key: str, rows: list[int], positives: list[list[int]]) -> bytes:
    offsets = np.cumsum([0] + [len(p) for p in positives]).astype(np.int64)
    flat = np.array([r for p in positives for r in p], dtype=np.int64)
    return npz(
        key=np.array(key), rows=np.array(rows, dtype=np.int64), offsets=offsets, positives=flat
    )


def unpack(data: bytes) -> QuestionSet:
    arrays = load_npz(data)
    offsets, flat = arrays["offsets"], arrays["positives"]
    positives = [flat[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    return QuestionSet(arrays["embeddings"].astype(np.float32), positives)


def distinct_questions(page: Sequence[TrainingPair]) -> list[str]:
    """The page's questions, stripped, once each, in the order they first appear."""
    return list(dict.fromkeys(pair.question.strip() for pair in page))


def fingerprint(page: Sequence[TrainingPair], model_name: str, dimension: int) -> str:
    digest = hashlib.sha256(f"{model_name}\0{dimension}".encode())
    for pair in page:
        digest.update(f"\0{pair.id}\0{pair.question}".encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class EmbeddedPage:
    """The distinct questions of one page of pairs and their embeddings (row i is question i)."""

    key: str
    questions: list[str]
    embeddings: np.ndarray
    reused: bool


class EmbeddedQuestions:
    """Load-or-embed of a run's pages of pairs, shared by every attempt of the run."""

    def __init__(
        self, run_id: str, artifacts: ArtifactStore, embedder: Embedder, dimension: int
    ) -> None:
        self.folder = f"{RUN_FOLDER_PREFIX}{run_id}"
        self.artifacts = artifacts
        self.embedder = embedder
        self.dimension = dimension  # the corpus's: the questions must land in its space

    def _name(self, key: str) -> str:
        return f"questions-{key}.npz"

    def page(self, page: Sequence[TrainingPair]) -> EmbeddedPage:
        key = fingerprint(page, self.embedder.model_name, self.dimension)
        questions = distinct_questions(page)
        kept = self.load(key, len(questions))
        if kept is not None:
            return EmbeddedPage(key, questions, kept, reused=True)
        embeddings = embed_questions(self.embedder, questions)
        self.artifacts.put_blob(
            self.folder,
            self._name(key),
            npz(
                embeddings=embeddings,
                key=np.array(key),
                model=np.array(self.embedder.model_name),
            ),
        )
        return EmbeddedPage(key, questions, embeddings, reused=False)

    def load(self, key: str, count: int | None = None) -> np.ndarray | None:
        """The embeddings kept under `key`, or None when there are none that can be trusted."""
        data = self.artifacts.get_blob(self.folder, self._name(key))
        if data is None:
            return None
        try:
            arrays = load_npz(data)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # cut short, or not an npz
            return None
        embeddings = arrays.get("embeddings")
        if (
            embeddings is None
            or str(arrays.get("key", "")) != key
            or str(arrays.get("model", "")) != self.embedder.model_name
            or embeddings.ndim != 2
            or embeddings.shape[1] != self.dimension
            or (count is not None and embeddings.shape[0] != count)
        ):
            return None
        return embeddings.astype(np.float32, copy=False)
