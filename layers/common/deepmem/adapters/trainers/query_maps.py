"""Query maps: what search applies to a query embedding before it is matched. Pure numpy.

Every trained adapter is used through one interface, `QueryMap.apply(q) -> q'` (one vector
(d,) or a matrix (n, d) of query embeddings in, L2-normalised rows out). Chunk embeddings are
never touched: documents are not re-embedded, whatever the map.

Two kinds, named in the artifact (`QueryModel.kind`):
- `linear`: `q' = normalize(W q)`, the query adapter as it always was (an artifact without a
  model kind is one of these);
- `feedback`: the same learned W, then one step of pseudo-relevance feedback against the
  corpus itself: `u = normalize(W q)`, `q' = normalize(u + weight * mean(top `chunks` rows
  of the corpus for u))`. Real questions often have several relevant chunks that lie close to
  each other; pulling the query toward the best few it already finds ranks more of them high.
  Its two constants are fixed (not learned): measured in `bench/README.md`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import numpy as np

from deepmem.adapters.trainers.adapter_maths import normalize, top_k

ModelKind = Literal["linear", "feedback"]
LINEAR: ModelKind = "linear"
FEEDBACK: ModelKind = "feedback"


@dataclass(frozen=True)
class QueryModel:
    """Which query map a trainer builds, and its fixed constants.

    `members`: adapters cross-fitted on as many folds of the questions (each holds out its
    own fold, trains on the rest) and averaged (their matrices' mean is again one d-by-d
    map), so every question trains some member."""

    kind: ModelKind = LINEAR
    feedback_chunks: int = 2
    feedback_weight: float = 0.75
    members: int = 1

    def __post_init__(self) -> None:
        if self.kind not in (LINEAR, FEEDBACK):
            raise ValueError(f"unknown query model kind {self.kind!r}")
        if self.feedback_chunks < 1 or self.feedback_weight < 0 or self.members < 1:
            raise ValueError(f"invalid query model {self}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> QueryModel:
        """An artifact's stored model; none stored (an older artifact) means linear."""
        if not data:
            return cls()
        kind = data.get("kind", LINEAR)
        if kind not in (LINEAR, FEEDBACK):
            raise ValueError(f"unknown query model kind {kind!r}")
        return cls(
            kind=FEEDBACK if kind == FEEDBACK else LINEAR,
            feedback_chunks=int(data.get("feedback_chunks", 2)),
            feedback_weight=float(data.get("feedback_weight", 0.75)),
            members=int(data.get("members", 1)),
        )


#: The stronger model's defaults (the `feedback_adapter` trainer).
FEEDBACK_MODEL = QueryModel(kind=FEEDBACK, members=3)


class QueryMap(Protocol):
    def apply(self, queries: np.ndarray) -> np.ndarray:
        """Adapted, L2-normalised query embedding(s): (d,) → (d,), (n, d) → (n, d)."""
        ...


def _rows(queries: np.ndarray) -> tuple[np.ndarray, bool]:
    q = np.asarray(queries, dtype=np.float32)
    return (q[None, :], True) if q.ndim == 1 else (q, False)


@dataclass(frozen=True)
class IdentityMap:
    """The base model: the query as it is, normalised."""

    def apply(self, queries: np.ndarray) -> np.ndarray:
        return normalize(np.asarray(queries, dtype=np.float32))


@dataclass(frozen=True)
class LinearMap:
    matrix: np.ndarray

    def apply(self, queries: np.ndarray) -> np.ndarray:
        q = np.asarray(queries, dtype=np.float32)
        return normalize(q @ np.asarray(self.matrix, dtype=np.float32).T)


@dataclass(frozen=True)
class FeedbackMap:
    """W, then one pseudo-relevance-feedback step against `corpus` (rows L2-normalised)."""

    matrix: np.ndarray
    corpus: np.ndarray
    chunks: int = 2
    weight: float = 0.75

    def apply(self, queries: np.ndarray) -> np.ndarray:
        q, single = _rows(queries)
        adapted = LinearMap(self.matrix).apply(q)
        if self.weight > 0 and len(adapted):
            found = top_k(adapted, self.corpus, self.chunks)  # (n, chunks)
            adapted = normalize(adapted + self.weight * self.corpus[found].mean(axis=1))
        return adapted[0] if single else adapted


def query_map(model: QueryModel, matrix: np.ndarray, corpus: np.ndarray | None) -> QueryMap:
    """The map an artifact of `model` applies; a feedback map needs the corpus it searches."""
    if model.kind == FEEDBACK:
        if corpus is None:
            raise ValueError("a feedback query map needs the corpus embeddings it searches")
        return FeedbackMap(matrix, corpus, model.feedback_chunks, model.feedback_weight)
    return LinearMap(matrix)


def as_query_map(adapter: QueryMap | np.ndarray | None) -> QueryMap:
    """A matrix (the older interface) as a linear map, None as the base, a map as itself."""
    if adapter is None:
        return IdentityMap()
    if isinstance(adapter, np.ndarray):
        return LinearMap(adapter)
    return adapter
