"""Deep Memory's training data, streamed: what `deep_memory.train()` does, in bounded memory.

deeplake 3.9's `VectorStore.deep_memory.train(queries, relevance, embedding_function, token)`
takes every query in one Python list (`relevance`: one list of `(chunk id, 1)` per query;
`embedding_function`: texts → vectors), validates both lists whole, writes them to the dataset
`<corpus>_queries` (created with `overwrite=True`; `tensor_db` runtime on `hub://`) with one
`add(text, metadata={"relevance": ...}, embedding_data=queries, embedding_function=...)`, and
then posts `/api/deepmemory/v1/train` with the two paths (`client.start_taining`). The API
takes no query embeddings directly and states no size limit; what it trains on is whatever
`<corpus>_queries` holds when the job starts.

So the same dataset can be written a page at a time: `QueriesUpload.begin` checks that the
token may use Deep Memory (as `train()` does first) and creates (and empties)
`<corpus>_queries`, `add` appends one keyset page of pairs (its distinct questions,
with every chunk each was asked of in that page, embedded by our embedder in batches), and
`start` posts the job over what was written. Memory holds one page, whatever the run's size.
A question asked of chunks in two pages becomes two queries (one per page); Deep Memory
trains on each query's relevant chunks, so this changes the weighting of such a question,
not what is relevant to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from deepmem.domain.models import TrainingPair
    from deepmem.ports import Embedder

Relevance = list[list[tuple[str, int]]]
#: (after id, limit) -> the run's next pairs by keyset.
PairPages = Callable[[int, int], Sequence["TrainingPair"]]
UPLOAD_PAGE = 10_000  # pairs a keyset read returns at most (the SQL caps it)
EMBED_BATCH = 256


class QueriesUpload(Protocol):
    def begin(self) -> None:
        """Create `<corpus>_queries` afresh (whatever an earlier submit left there)."""
        ...

    def add(self, queries: list[str], relevance: Relevance, embeddings: list[list[float]]) -> None:
        """Append queries, their relevance and their embeddings."""
        ...

    def start(self) -> str:
        """Start the training job over what was written; its job id."""
        ...


def build_training_data(pairs: Sequence[TrainingPair]) -> tuple[list[str], Relevance]:
    """One query per distinct question, with every chunk it was asked of (score 1, the only
    score Deep Memory accepts)."""
    relevance_by_question: dict[str, list[tuple[str, int]]] = {}
    for pair in pairs:
        relevant = relevance_by_question.setdefault(pair.question.strip(), [])
        if (pair.chunk_id, 1) not in relevant:
            relevant.append((pair.chunk_id, 1))
    queries = list(relevance_by_question)
    return queries, [relevance_by_question[q] for q in queries]


def write_pairs(
    pages: PairPages, embedder: Embedder, upload: QueriesUpload, page_size: int = UPLOAD_PAGE
) -> tuple[int, int]:
    """Every pair of the run into `<corpus>_queries`, by keyset pages: (pairs, queries)."""
    upload.begin()
    after, pairs, queries = 0, 0, 0
    while True:
        page = pages(after, page_size)
        if not page:
            break
        texts, relevance = build_training_data(page)
        embeddings: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH):
            embeddings.extend(embedder.embed(texts[start : start + EMBED_BATCH]))
        upload.add(texts, relevance, embeddings)
        after, pairs, queries = page[-1].id, pairs + len(page), queries + len(texts)
    return pairs, queries


class DeepLakeQueriesUpload:
    """`QueriesUpload` with deeplake 3.9, doing what `deep_memory.train()` does (above)."""

    def __init__(self, dataset_path: str, token: str | None, api_url: str | None) -> None:
        self.dataset_path = dataset_path
        self.token = token
        self.api_url = api_url
        self._client: Any = None
        self._queries: Any = None

    def begin(self) -> None:
        from deeplake.core.vectorstore import VectorStore
        from deeplake.util.exceptions import DeepMemoryAccessError

        from deepmem.adapters.trainers.deep_memory import point_library_at

        point_library_at(self.api_url)
        # read_only: the job reads the corpus, nothing here writes it.
        corpus = VectorStore(
            path=self.dataset_path, token=self.token, read_only=True, verbose=False
        )
        self._client = corpus.deep_memory.client
        if self._client is None:  # what `train()`'s access check raises, before any write
            raise DeepMemoryAccessError()
        self._queries = VectorStore(
            path=f"{self.dataset_path}_queries",
            overwrite=True,
            runtime={"tensor_db": True} if self.dataset_path.startswith("hub://") else None,
            token=self.token,
            verbose=False,
        )

    def add(self, queries: list[str], relevance: Relevance, embeddings: list[list[float]]) -> None:
        assert self._queries is not None, "begin() first"
        # The call `train()` makes, its embedding function answering what we embedded (the
        # library may call it on parts of the list: look each text up).
        vectors = dict(zip(queries, embeddings, strict=True))
        self._queries.add(
            text=queries,
            metadata=[{"relevance": r} for r in relevance],
            embedding_data=queries,
            embedding_function=lambda texts: [vectors[text] for text in texts],
        )

    def start(self) -> str:
        assert self._client is not None, "begin() first"
        response = self._client.start_taining(
            corpus_path=self.dataset_path, queries_path=f"{self.dataset_path}_queries"
        )
        return str(response["job_id"])
