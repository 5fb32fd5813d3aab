"""OpenAIEmbedder against the loopback OpenAI-compatible server."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import openai
import pytest
from deepmem.adapters.embedders.openai import OpenAIEmbedder
from deepmem.config import Config
from deepmem.domain.errors import EmbeddingError, TransientEmbeddingError
from deepmem.wiring import embedder_for_model

from tests.fakes.llm_server import FakeLLMServer, vector_for


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(dim=48) as fake:
        yield fake


def client_for(server: FakeLLMServer, api_key: str = "test-key") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0, timeout=5)


def test_vectors_are_unit_length_in_order_and_batched(server: FakeLLMServer) -> None:
    embedder = OpenAIEmbedder(client_for(server), "fake-embed", batch_size=4)
    texts = [f"passage number {i}" for i in range(10)]
    vectors = embedder.embed(texts)
    assert len(vectors) == 10
    for text, vector in zip(texts, vectors, strict=True):
        assert len(vector) == 48
        assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-9)
        assert vector == pytest.approx(vector_for(text, 48))
    assert server.stats()["embeddings"] == 3  # 4 + 4 + 2
    assert embedder.tokens_used > 0


def test_dimension_is_learnt_from_one_call_when_not_given(server: FakeLLMServer) -> None:
    embedder = OpenAIEmbedder(client_for(server), "fake-embed")
    assert embedder.model_name == "fake-embed"
    assert embedder.dimension == 48
    assert embedder.dimension == 48
    assert server.stats()["embeddings"] == 1


def test_a_given_dimension_is_requested_and_checked(server: FakeLLMServer) -> None:
    embedder = OpenAIEmbedder(client_for(server), "fake-embed", dimension=16)
    assert embedder.dimension == 16
    assert server.stats()["embeddings"] == 0
    assert [len(v) for v in embedder.embed(["a", "b"])] == [16, 16]


def test_a_known_model_answering_another_size_is_an_error(server: FakeLLMServer) -> None:
    # text-embedding-3-small is 1536 wide; the fake answers 48 when not asked for a size.
    embedder = OpenAIEmbedder(client_for(server), "text-embedding-3-small")
    assert embedder.dimension == 1536
    with pytest.raises(EmbeddingError, match="48 dimensions, expected 1536"):
        embedder.embed(["a"])


def test_empty_input_makes_no_call(server: FakeLLMServer) -> None:
    assert OpenAIEmbedder(client_for(server), "fake-embed").embed([]) == []
    assert server.stats()["total"] == 0


@pytest.mark.parametrize(
    ("status", "transient"), [(401, False), (400, False), (404, False), (429, True), (500, True)]
)
def test_service_errors_are_wrapped_transient_or_permanent(
    server: FakeLLMServer, status: int, transient: bool
) -> None:
    server.configure(fail_first=1, fail_status=status)
    with pytest.raises(EmbeddingError, match=f"HTTP {status}") as caught:
        OpenAIEmbedder(client_for(server), "fake-embed").embed(["a"])
    assert isinstance(caught.value.__cause__, openai.APIStatusError)
    assert isinstance(caught.value, TransientEmbeddingError) is transient


def test_connection_errors_are_transient() -> None:
    closed = FakeLLMServer()
    client = client_for(closed)
    closed.stop()
    with pytest.raises(TransientEmbeddingError, match="APIConnectionError") as caught:
        OpenAIEmbedder(client, "fake-embed").embed(["a"])
    assert isinstance(caught.value.__cause__, openai.APIConnectionError)


def configured_embedder(server: FakeLLMServer, **variables: str) -> OpenAIEmbedder:
    """The embedder as the composition root makes it from the environment's variables."""
    config = Config.model_validate(
        {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": server.base_url, **variables}
    )
    embedder = embedder_for_model(config, "fake-embed")
    assert isinstance(embedder, OpenAIEmbedder)
    return embedder


def test_the_configured_timeout_bounds_a_call_and_is_transient(server: FakeLLMServer) -> None:
    server.configure(hang_first=1, hang_seconds=5)
    embedder = configured_embedder(server, DEEPMEM_LLM_TIMEOUT="0.3", DEEPMEM_LLM_MAX_RETRIES="0")
    started = time.monotonic()
    with pytest.raises(TransientEmbeddingError, match="APITimeoutError"):
        embedder.embed(["a"])
    assert time.monotonic() - started < 4  # the SDK's own default is 600 s
    assert server.stats()["embeddings"] == 1


def test_the_configured_retries_are_spent_before_the_error(server: FakeLLMServer) -> None:
    # Retry-After tells the client how long to wait: a short one keeps the test quick.
    server.configure(fail_first=3, fail_status=429, retry_after="0.01")
    retried = configured_embedder(server, DEEPMEM_LLM_MAX_RETRIES="3").embed(["a"])
    server.configure(fail_first=3, fail_status=429, retry_after="0.01")
    with pytest.raises(TransientEmbeddingError, match="HTTP 429"):
        configured_embedder(server, DEEPMEM_LLM_MAX_RETRIES="2").embed(["a"])

    assert len(retried) == 1
    assert server.stats()["by_status"]["429"] == 6
