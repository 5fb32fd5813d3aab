"""A DeepLake dataset as a search corpus: its chunk embeddings loaded with numpy, searched with
or without a query adapter, and evaluated against judged queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from deepmem.adapters.trainers.adapter_maths import (
    RECALL_KS,
    normalize,
    recall_at_k,
    relative_gain,
    top_k,
)
from deepmem.adapters.trainers.query_maps import QueryMap, as_query_map
from deepmem.domain.errors import DatasetError

if TYPE_CHECKING:
    from deepmem.ports import Embedder


@dataclass(frozen=True)
class Corpus:
    """The dataset's chunk ids and embeddings, row-aligned (texts are read on demand)."""

    path: str
    ids: list[str]
    embeddings: np.ndarray  # (n, d), L2-normalised
    index: dict[str, int]
    dataset: Any = field(default=None, repr=False, compare=False)  # open, for text reads

    @property
    def dimension(self) -> int:
        return int(self.embeddings.shape[1])

    def texts(self, rows: Sequence[int], token: str | None = None) -> list[str]:
        ds = self.dataset if self.dataset is not None else _load_dataset(self.path, token)
        return [str(ds["text"][row].data()["value"]) for row in rows]


def _load_dataset(path: str, token: str | None) -> Any:
    from deepmem.adapters.dataset.deeplake import open_dataset

    return open_dataset(path, token)


def load_corpus(path: str, token: str | None = None, dataset: Any | None = None) -> Corpus:
    """Read the `id` and `embedding` tensors of a DeepLake dataset (no VectorStore: that
    constructor calls the Activeloop API even for local paths)."""
    ds = dataset if dataset is not None else _load_dataset(path, token)
    try:
        ids = [str(v) for v in ds["id"].numpy().reshape(-1).tolist()]
        embeddings = np.asarray(ds["embedding"].numpy(), dtype=np.float32)
    except Exception as exc:
        raise DatasetError(
            f"dataset {path} has no readable `id`/`embedding` tensors: {exc}"
        ) from exc
    if embeddings.ndim != 2 or embeddings.shape[0] != len(ids) or not ids:
        raise DatasetError(
            f"dataset {path}: expected one embedding per chunk, got {embeddings.shape} for "
            f"{len(ids)} ids"
        )
    # Normalised in place (the same values as `normalize`): a copy would double the corpus's
    # memory, 1.5 GB at 1M chunks of 384 dimensions.
    if not embeddings.flags.writeable:
        embeddings = embeddings.copy()
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    return Corpus(
        path=path,
        ids=ids,
        embeddings=embeddings,
        index={chunk_id: row for row, chunk_id in enumerate(ids)},
        dataset=ds,
    )


@dataclass(frozen=True)
class SearchHit:
    id: str
    text: str
    score: float


def search(
    question: str,
    *,
    embedder: Embedder,
    dataset_path: str | None = None,
    corpus: Corpus | None = None,
    adapter: QueryMap | np.ndarray | None = None,
    k: int = 10,
    token: str | None = None,
) -> list[SearchHit]:
    """Embed `question`, apply the adapter (if any: a query map, or a linear adapter's
    matrix) and return the k nearest chunks.

    Pass `corpus` to reuse one loaded dataset across many searches.
    """
    if corpus is None:
        if dataset_path is None:
            raise ValueError("search needs a dataset_path or a loaded corpus")
        corpus = load_corpus(dataset_path, token)
    query = np.asarray(embedder.embed([question]), dtype=np.float32)
    if query.shape[1] != corpus.dimension:
        raise DatasetError(
            f"the embedder {embedder.model_name} gives {query.shape[1]} dimensions, the "
            f"dataset {corpus.dimension}: search with the model that built the dataset"
        )
    vector = as_query_map(adapter).apply(query)
    rows = top_k(vector, corpus.embeddings, k)[0].tolist()
    scores = (corpus.embeddings[rows] @ vector[0]).tolist()
    texts = corpus.texts(rows, token)
    return [
        SearchHit(id=corpus.ids[row], text=text, score=float(score))
        for row, text, score in zip(rows, texts, scores, strict=True)
    ]


def embed_questions(embedder: Embedder, questions: Sequence[str], batch: int = 256) -> np.ndarray:
    vectors: list[list[float]] = []
    for start in range(0, len(questions), batch):
        vectors.extend(embedder.embed(list(questions[start : start + batch])))
    return normalize(np.asarray(vectors, dtype=np.float32).reshape(len(questions), -1))


def dataset_embedding_model(path: str, token: str | None = None) -> str | None:
    """The embedding model the dataset builder recorded in the dataset's info, if any."""
    info = _load_dataset(path, token).info
    model = info.get("embedding_model") if hasattr(info, "get") else None
    return str(model) if model else None


def evaluate_queries(
    corpus: Corpus,
    embedder: Embedder,
    queries: Sequence[str],
    relevant_ids: Sequence[Sequence[str]],
    *,
    adapter: QueryMap | np.ndarray | None = None,
    ks: Sequence[int] = RECALL_KS,
) -> dict[str, Any]:
    """recall@k of `queries` against their judged chunk ids, with and without the adapter
    (for `deepmem eval`). Queries whose judged chunks are all missing from the dataset are
    skipped and counted."""
    kept: list[int] = []
    positives: list[list[int]] = []
    for i, ids in enumerate(relevant_ids):
        rows = sorted({corpus.index[c] for c in ids if c in corpus.index})
        if rows:
            kept.append(i)
            positives.append(rows)
    if not kept:
        raise DatasetError("none of the judged chunk ids is in the dataset")
    vectors = embed_questions(embedder, [queries[i] for i in kept])
    result: dict[str, Any] = {
        "queries": len(kept),
        "skipped": len(queries) - len(kept),
        "base": recall_at_k(vectors, positives, corpus.embeddings, ks),
    }
    if adapter is not None:
        mapped = as_query_map(adapter).apply(vectors)
        adapted = recall_at_k(mapped, positives, corpus.embeddings, ks)
        result["adapter"] = adapted
        result["relative_gain"] = {k: relative_gain(result["base"][k], adapted[k]) for k in adapted}
    return result


@dataclass(frozen=True)
class CorpusSearch:
    """A loaded corpus, the embedder of its model and the adapter to apply (None: the base),
    for `deepmem search` and `deepmem eval`."""

    corpus: Corpus
    embedder: Embedder
    adapter: QueryMap | np.ndarray | None

    def search(self, question: str, *, k: int, use_adapter: bool = True) -> list[SearchHit]:
        adapter = self.adapter if use_adapter else None
        return search(question, embedder=self.embedder, corpus=self.corpus, adapter=adapter, k=k)

    def evaluate(self, queries: Sequence[str], relevant: Sequence[Sequence[str]]) -> dict[str, Any]:
        return evaluate_queries(self.corpus, self.embedder, queries, relevant, adapter=self.adapter)
