"""OpenAIQuestionGenerator against the loopback OpenAI-compatible server, fault by fault."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import openai
import pytest
from deepmem.adapters.generators.openai import OpenAIQuestionGenerator
from deepmem.domain.chunks import Chunk
from deepmem.domain.errors import GenerationError, TransientGenerationError
from deepmem.ports import GeneratedQuestions

from tests.fakes.llm_server import FakeLLMServer, chunk_key, http_date, questions_for

CHUNK = Chunk(
    id="doc-1#0",
    text="PostgreSQL autovacuum reclaims storage occupied by dead tuples and updates statistics.",
)
EXPECTED = questions_for(CHUNK.text, 3)


class RecordingSleep:
    """Records each backoff delay and yields once, so tests do not wait for real."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


def run(
    server: FakeLLMServer,
    use: Callable[[OpenAIQuestionGenerator], Awaitable[Any]],
    *,
    base_url: str | None = None,
    api_key: str = "test-key",
    **options: Any,
) -> Any:
    """Build the generator inside the event loop (the async client binds to it) and run."""

    async def main() -> Any:
        client = openai.AsyncOpenAI(base_url=base_url or server.base_url, api_key=api_key)
        options.setdefault("timeout", 5.0)
        options.setdefault("backoff_base", 0.01)
        generator = OpenAIQuestionGenerator(client, "fake-model", **options)
        try:
            return await use(generator)
        finally:
            await client.close()

    return asyncio.run(main())


def generate(server: FakeLLMServer, count: int = 3, **options: Any) -> GeneratedQuestions:
    result: GeneratedQuestions = run(server, lambda g: g.generate(CHUNK, count), **options)
    return result


def test_a_healthy_call_gives_the_questions_once(server: FakeLLMServer) -> None:
    result = generate(server)
    assert result.chunk_id == CHUNK.id
    assert result.questions == EXPECTED
    assert (result.llm_calls, result.retries) == (1, 0)
    assert server.calls_for(CHUNK.text) == 1


def test_the_count_reaches_the_server_through_the_schema_and_the_prompt(
    server: FakeLLMServer,
) -> None:
    assert generate(server, count=5).questions == questions_for(CHUNK.text, 5)
    # Without structured output the server can only read the count from the prompt.
    plain = generate(server, count=2, structured_output=False)
    assert plain.questions == questions_for(CHUNK.text, 2)


def test_latency_is_waited_out(server: FakeLLMServer) -> None:
    server.configure(latency=0.3)
    started = time.monotonic()
    result = generate(server)
    assert time.monotonic() - started >= 0.3
    assert result.questions == EXPECTED
    assert result.retries == 0


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_with_retry_after_is_honoured_then_recovers(server: FakeLLMServer, form: str) -> None:
    retry_after = "2" if form == "seconds" else http_date(4)
    server.configure(fail_first=2, fail_status=429, retry_after=retry_after)
    sleep = RecordingSleep()
    result = generate(server, sleep=sleep)
    assert result.questions == EXPECTED
    assert (result.llm_calls, result.retries) == (3, 2)
    assert len(sleep.delays) == 2
    # The server's wait, not the tiny exponential backoff (base 0.01 s).
    assert all(1.0 <= d <= 4.0 * 1.1 for d in sleep.delays), sleep.delays  # + a tenth of jitter
    assert server.stats()["by_status"] == {"200": 1, "429": 2}
    assert server.calls_for(CHUNK.text) == 3


def test_retry_after_is_capped(server: FakeLLMServer) -> None:
    server.configure(fail_first=1, fail_status=429, retry_after="3600")
    sleep = RecordingSleep()
    assert generate(server, sleep=sleep, max_retry_after=2.0).retries == 1
    assert 2.0 <= sleep.delays[0] <= 2.0 * 1.1  # the cap, plus at most a tenth as jitter


def test_429_without_retry_after_backs_off_exponentially(server: FakeLLMServer) -> None:
    server.configure(fail_first=3, fail_status=429)
    sleep = RecordingSleep()
    result = generate(server, sleep=sleep, backoff_base=1.0, rng=lambda: 1.0)
    assert result.retries == 3
    assert sleep.delays == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_recovers_by_retry(server: FakeLLMServer, status: int) -> None:
    server.configure(fail_first=1, fail_status=status)
    result = generate(server, sleep=RecordingSleep())
    assert result.questions == EXPECTED
    assert result.retries == 1
    assert server.stats()["by_status"] == {"200": 1, str(status): 1}


def test_persistent_503_ends_in_a_transient_error_after_the_last_retry(
    server: FakeLLMServer,
) -> None:
    server.configure(fail_first=1000, fail_status=503)
    sleep = RecordingSleep()
    with pytest.raises(TransientGenerationError) as caught:
        generate(server, sleep=sleep, max_retries=3)
    assert "HTTP 503" in str(caught.value)
    assert "4 attempts" in str(caught.value)
    assert CHUNK.id in str(caught.value)
    assert isinstance(caught.value.__cause__, openai.APIStatusError)
    assert server.calls_for(CHUNK.text) == 4
    assert len(sleep.delays) == 3


def test_a_hang_past_the_timeout_is_retried(server: FakeLLMServer) -> None:
    server.configure(hang_first=1, hang_seconds=10)
    started = time.monotonic()
    result = generate(server, timeout=0.5, sleep=RecordingSleep())
    assert time.monotonic() - started < 5
    assert result.questions == EXPECTED
    assert result.retries == 1
    assert server.calls_for(CHUNK.text) == 2
    assert server.answered_per_chunk[chunk_key(CHUNK.text)] == 1


def test_hanging_for_good_ends_in_a_transient_timeout_error(server: FakeLLMServer) -> None:
    server.configure(hang_first=1000, hang_seconds=10)
    started = time.monotonic()
    with pytest.raises(TransientGenerationError) as caught:
        generate(server, timeout=0.3, max_retries=2, sleep=RecordingSleep())
    assert time.monotonic() - started < 5
    assert "timed out" in str(caught.value)
    assert isinstance(caught.value.__cause__, openai.APITimeoutError)
    assert server.calls_for(CHUNK.text) == 3


def test_connection_refused_is_retried_then_transient(server: FakeLLMServer) -> None:
    closed = FakeLLMServer()  # bound, never started, then closed: nobody listens there
    base_url = closed.base_url
    closed.stop()
    sleep = RecordingSleep()
    with pytest.raises(TransientGenerationError) as caught:
        run(server, lambda g: g.generate(CHUNK, 3), base_url=base_url, max_retries=2, sleep=sleep)
    assert isinstance(caught.value.__cause__, openai.APIConnectionError)
    assert len(sleep.delays) == 2


@pytest.mark.parametrize(
    ("status", "hint"),
    [(400, "bad request"), (401, "API key"), (403, "forbidden"), (404, "model name")],
)
def test_refusals_fail_at_once_without_retry(server: FakeLLMServer, status: int, hint: str) -> None:
    server.configure(fail_first=1000, fail_status=status, retry_after="1")
    sleep = RecordingSleep()
    with pytest.raises(GenerationError) as caught:
        generate(server, sleep=sleep)
    assert not isinstance(caught.value, TransientGenerationError)
    assert f"HTTP {status}" in str(caught.value)
    assert hint in str(caught.value)
    assert isinstance(caught.value.__cause__, openai.APIStatusError)
    assert caught.value.__cause__.status_code == status
    assert sleep.delays == []
    assert server.calls_for(CHUNK.text) == 1
    assert server.stats()["total"] == 1


def test_a_wrong_api_key_is_a_401_generation_error(server: FakeLLMServer) -> None:
    server.configure(api_key="right-key")
    with pytest.raises(GenerationError, match="HTTP 401"):
        generate(server, api_key="wrong-key")
    assert generate(server, api_key="right-key").questions == EXPECTED
    assert server.stats()["by_status"] == {"200": 1, "401": 1}


def test_truncated_json_is_parsed_by_the_fallback(server: FakeLLMServer) -> None:
    server.configure(content_mode="truncated_json")

    async def use(g: OpenAIQuestionGenerator) -> tuple[GeneratedQuestions, int]:
        return await g.generate(CHUNK, 3), g.stats.malformed_answers

    result, malformed = run(server, use)
    assert result.questions == EXPECTED[:2]  # the last one was cut off
    assert malformed == 1
    assert server.calls_for(CHUNK.text) == 1


@pytest.mark.parametrize("mode", ["garbage", "empty"])
def test_unusable_content_gives_zero_questions_counted_not_an_error(
    server: FakeLLMServer, mode: str
) -> None:
    server.configure(content_mode=mode)

    async def use(g: OpenAIQuestionGenerator) -> tuple[GeneratedQuestions, int]:
        return await g.generate(CHUNK, 3), g.stats.empty_results

    result, empty = run(server, use)
    assert result.questions == []
    assert result.llm_calls == 1
    assert result.tokens_used > 0
    assert empty == 1
    assert server.calls_for(CHUNK.text) == 1


@pytest.mark.parametrize("mode", ["json", "lines"])
def test_meta_lines_and_numbering_are_removed(server: FakeLLMServer, mode: str) -> None:
    server.configure(meta_lines=True, content_mode=mode)
    result = generate(server)
    assert result.questions == EXPECTED


def test_tokens_are_counted_per_chunk_and_in_the_stats(server: FakeLLMServer) -> None:
    chunks = [
        Chunk(id=f"c{i}", text=f"Chunk {i} describes lanes{i} and batches{i}.") for i in range(4)
    ]

    async def use(g: OpenAIQuestionGenerator) -> tuple[list[GeneratedQuestions], int]:
        results = [await g.generate(chunk, 3) for chunk in chunks]
        return results, g.stats.tokens_used

    results, total = run(server, use)
    assert all(r.tokens_used > 0 for r in results)
    assert sum(r.tokens_used for r in results) == total == server.stats()["tokens"]


def test_32_concurrent_generations_through_one_client(server: FakeLLMServer) -> None:
    server.configure(latency=0.3)
    chunks = [
        Chunk(id=f"c{i}", text=f"Chunk {i} explains scheduler{i} placing pods{i} on nodes.")
        for i in range(32)
    ]

    async def use(g: OpenAIQuestionGenerator) -> list[GeneratedQuestions]:
        return list(await asyncio.gather(*(g.generate(c, 3) for c in chunks)))

    started = time.monotonic()
    results = run(server, use)
    elapsed = time.monotonic() - started
    assert [r.chunk_id for r in results] == [c.id for c in chunks]
    assert all(
        r.questions == questions_for(c.text, 3) for r, c in zip(results, chunks, strict=True)
    )
    assert all(r.retries == 0 for r in results)
    stats = server.stats()
    assert stats["per_chunk"] == {chunk_key(c.text): 1 for c in chunks}
    assert stats["max_in_flight"] >= 16
    assert elapsed < 32 * 0.3 / 4  # far from a sequential 9.6 s


def test_a_requests_per_minute_cap_is_respected_and_every_chunk_recovers(
    server: FakeLLMServer,
) -> None:
    server.configure(rpm=3, rpm_window=1.0)
    chunks = [Chunk(id=f"c{i}", text=f"Chunk {i} covers quota{i} and limits{i}.") for i in range(6)]

    async def use(g: OpenAIQuestionGenerator) -> list[GeneratedQuestions]:
        return list(await asyncio.gather(*(g.generate(c, 3) for c in chunks)))

    results = run(server, use, max_retries=10)  # real sleeps: the window must pass
    assert all(len(r.questions) == 3 for r in results)
    assert sum(r.retries for r in results) >= 3
    assert server.stats()["by_status"]["200"] == 6
    assert server.stats()["answered_per_chunk"] == {chunk_key(c.text): 1 for c in chunks}


@pytest.mark.parametrize("body_mode", ["truncated", "not_completion"])
def test_a_broken_200_is_transient_and_retried_like_a_5xx(
    server: FakeLLMServer, body_mode: str
) -> None:
    server.configure(body_mode=body_mode)
    sleep = RecordingSleep()
    with pytest.raises(TransientGenerationError) as caught:
        generate(server, sleep=sleep, max_retries=3)
    assert "4 attempts" in str(caught.value)
    assert server.calls_for(CHUNK.text) == 4
    assert len(sleep.delays) == 3
    # And it recovers when the body is whole again, like a 5xx does.
    server.configure(body_mode=body_mode)
    server.reset()

    async def flaky(g: OpenAIQuestionGenerator) -> GeneratedQuestions:
        first = asyncio.create_task(g.generate(CHUNK, 3))
        while server.calls_for(CHUNK.text) < 1:
            await asyncio.sleep(0.001)
        server.configure(body_mode="completion")
        return await first

    result: GeneratedQuestions = run(server, flaky, sleep=RecordingSleep())
    assert result.questions == EXPECTED
    assert result.retries >= 1


def test_nul_characters_in_an_answer_are_cleaned(server: FakeLLMServer) -> None:
    server.configure(content_mode="nul")
    result = generate(server)
    assert result.questions == EXPECTED
    assert not any("\x00" in q for q in result.questions)


class RecordingPacer:
    """A Pacer that gives every turn at once and writes down what the generator told it."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self._turn = 0.0

    async def turn(self) -> float:
        self._turn += 1.0
        self.events.append(("turn", self._turn))
        return self._turn

    def pushed_back(self, sent: float, retry_after: float | None = None) -> None:
        self.events.append(("pushed_back", sent, retry_after))

    @contextlib.asynccontextmanager
    async def idle(self) -> AsyncIterator[None]:
        self.events.append(("idle",))
        yield
        self.events.append(("busy",))


def test_every_attempt_takes_a_turn_and_each_429_is_reported_before_its_retry(
    server: FakeLLMServer,
) -> None:
    server.configure(fail_first=3, fail_status=429, retry_after="2")
    pacer = RecordingPacer()
    sleep = RecordingSleep()
    result = run(server, lambda g: g.generate(CHUNK, 3, pacer), sleep=sleep)
    assert result.questions == EXPECTED
    assert (result.llm_calls, result.retries) == (4, 3)
    expected: list[tuple[Any, ...]] = []
    for turn in (1.0, 2.0, 3.0):  # each refusal told at once, naming its turn, then the wait
        expected += [("turn", turn), ("pushed_back", turn, 2.0), ("idle",), ("busy",)]
    assert pacer.events == [*expected, ("turn", 4.0)]
    # Retry-After still honoured: each wait (inside `idle`, its slot lent) is the server's.
    assert len(sleep.delays) == 3 and all(2.0 <= d <= 2.2 for d in sleep.delays)
    assert server.stats()["chat"] == 4  # one call per turn, no call without one


def test_a_5xx_retry_takes_a_turn_but_is_no_refusal_for_load(server: FakeLLMServer) -> None:
    server.configure(fail_first=2, fail_status=503, retry_after="0")
    pacer = RecordingPacer()
    result = run(server, lambda g: g.generate(CHUNK, 3, pacer), sleep=RecordingSleep())
    assert result.retries == 2
    # Three turns; nothing reported, no slot lent: an error, not the endpoint's pace.
    assert pacer.events == [("turn", 1.0), ("turn", 2.0), ("turn", 3.0)]


def test_a_refusal_for_good_takes_one_turn(server: FakeLLMServer) -> None:
    server.configure(fail_first=1, fail_status=401)
    pacer = RecordingPacer()
    with pytest.raises(GenerationError):
        run(server, lambda g: g.generate(CHUNK, 3, pacer), sleep=RecordingSleep())
    assert pacer.events == [("turn", 1.0)]
