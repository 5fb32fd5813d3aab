"""Embedder over any OpenAI-compatible embeddings endpoint."""

from __future__ import annotations

import math
from collections.abc import Sequence

import openai

from deepmem.domain.errors import EmbeddingError, TransientEmbeddingError

#: Client errors another try may fix, as the question generator counts them (timeout,
#: conflict, too early, rate limited); every 5xx too.
_TRANSIENT_4XX = frozenset({408, 409, 425, 429})

# Native sizes of OpenAI's models, so `dimension` needs no call for them.
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


def l2_normalize(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(math.fsum(v * v for v in vector))
    if norm == 0 or not math.isfinite(norm):
        raise EmbeddingError("the embedding service returned a zero or non-finite vector")
    return [v / norm for v in vector]


class OpenAIEmbedder:
    """L2-normalised vectors, `batch_size` texts per request.

    The client's own timeout and retries (the composition root sets DEEPMEM_LLM_TIMEOUT and
    DEEPMEM_LLM_MAX_RETRIES) come first; what still fails is a TransientEmbeddingError when
    another try may succeed (429, 408, 5xx, timeouts, connection errors: the state machine
    retries it), an EmbeddingError when it will not (401, 404, a bad request...).

    `dimension` given: it is sent as ``dimensions`` (text-embedding-3 models shorten their
    vectors to it) and every vector is checked against it. Not given: the model's native size,
    known or learnt from one call.
    """

    def __init__(
        self,
        client: openai.OpenAI,
        model: str,
        dimension: int | None = None,
        batch_size: int = 256,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if dimension is not None and dimension < 1:
            raise ValueError("dimension must be at least 1")
        self._client = client
        self._model = model
        self._requested_dimension = dimension
        self._dimension = dimension or KNOWN_DIMENSIONS.get(model)
        self.batch_size = batch_size
        self.tokens_used = 0

    @property
    def model_name(self) -> str:
        return self._model

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = len(self._embed_batch(["dimension probe"])[0])
        return self._dimension

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(self._embed_batch(list(texts[start : start + self.batch_size])))
        return vectors

    def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        # An empty string is refused by OpenAI's endpoint; a space embeds as "nothing".
        inputs = [text if text.strip() else " " for text in batch]
        try:
            if self._requested_dimension is not None:
                response = self._client.embeddings.create(
                    model=self._model,
                    input=inputs,
                    dimensions=self._requested_dimension,
                    encoding_format="float",
                )
            else:
                response = self._client.embeddings.create(
                    model=self._model, input=inputs, encoding_format="float"
                )
        except openai.APIStatusError as exc:
            status = exc.status_code
            transient = status in _TRANSIENT_4XX or status >= 500
            raise (TransientEmbeddingError if transient else EmbeddingError)(
                f"embedding model {self._model} refused {len(batch)} texts "
                f"with HTTP {status}: {exc.message}"
            ) from exc
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise TransientEmbeddingError(
                f"embedding model {self._model} unreachable for {len(batch)} texts: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        except openai.OpenAIError as exc:
            raise EmbeddingError(
                f"embedding model {self._model} failed on {len(batch)} texts: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(batch):
            raise EmbeddingError(
                f"embedding model {self._model} returned {len(data)} vectors for {len(batch)} texts"
            )
        usage = getattr(response, "usage", None)
        self.tokens_used += int(getattr(usage, "total_tokens", 0) or 0)
        vectors = [l2_normalize(item.embedding) for item in data]
        # Checked against a known size only: the probe itself learns it from the first vector.
        expected = self._dimension
        for vector in vectors:
            if expected is not None and len(vector) != expected:
                raise EmbeddingError(
                    f"embedding model {self._model} returned {len(vector)} dimensions, "
                    f"expected {expected}"
                )
        return vectors
