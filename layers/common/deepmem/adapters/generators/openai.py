"""QuestionGenerator over any OpenAI-compatible chat completions endpoint.

The client is given (its base URL honours OPENAI_BASE_URL, so vLLM, Ollama or a loopback fake
work the same). The SDK's own retries are turned off: this adapter retries itself, so it can
count retries, honour Retry-After, and tell a transient failure from a permanent one by type.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, cast

import openai

from deepmem.adapters.generators.completion import content_of, total_tokens
from deepmem.domain.chunks import Chunk
from deepmem.domain.errors import DeepmemError, GenerationError, TransientGenerationError
from deepmem.domain.questions import MAX_QUESTION_CHARS, clean_questions
from deepmem.ports import UNPACED, GeneratedQuestions, Pacer

logger = logging.getLogger(__name__)


SYSTEM_PROMPT = (
    "You write search queries for a retrieval system. Given one passage of a knowledge base, "
    "write questions that a real user of that knowledge base would type, which this passage "
    "alone fully answers. Each question must stand on its own: name the subject explicitly, "
    "never refer to 'the text', 'the passage', 'the document' or 'the author', and never say "
    "'according to'. Vary the questions: different facts, different wording. Do not number "
    "them and add no commentary."
)

USER_PROMPT = (
    "Write exactly {count} distinct questions answered by this passage.\n\n"
    "<chunk>\n{text}\n</chunk>\n\n"
    'Answer with JSON: {{"questions": ["...", "..."]}}'
)

# Statuses worth another try: rate limits, conflicts, request timeouts and server errors.
_RETRYABLE_4XX = frozenset({408, 409, 429})

_JSON_STRING_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')
_FENCE_RE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


# ---- pure parts: parsing, normalisation, backoff ---------------------------------------------


def parse_candidates(content: str | None) -> tuple[list[str], bool]:
    """The candidate questions of a model answer and whether it was well-formed JSON.

    Well-formed: ``{"questions": [...]}`` (or a bare list). Otherwise fall back to string
    literals that look like questions (truncated JSON) or to the answer's lines.
    """
    text = _FENCE_RE.sub("", (content or "").strip())
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        data = data.get("questions")
    if isinstance(data, list) and all(isinstance(q, str) for q in data):
        return list(data), True
    literals = []
    for match in _JSON_STRING_RE.finditer(text):
        try:
            literal = json.loads(f'"{match.group(1)}"')
        except ValueError:
            continue
        if literal.rstrip().endswith("?"):
            literals.append(literal)
    if literals:
        return literals, False
    # Plain lines: only those that read as questions, so prose is not mistaken for one.
    return [line for line in text.splitlines() if line.strip().endswith("?")], False


def backoff_delay(
    retry: int, base: float, cap: float, rng: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**retry))."""
    return rng() * min(cap, base * (2**retry))


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date.
    None when absent or unreadable."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000
            if math.isfinite(value):
                return max(0.0, value)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        return max(0.0, value) if math.isfinite(value) else None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# ---- the adapter ------------------------------------------------------------------------------


@dataclass
class GeneratorStats:
    """Running totals of one generator instance (for logs and metrics)."""

    llm_calls: int = 0
    retries: int = 0
    tokens_used: int = 0
    malformed_answers: int = 0
    """Answers that were not the JSON asked for (parsed by the fallback)."""
    empty_results: int = 0
    """Chunks that yielded zero usable questions."""
    rejected_questions: int = 0


class _RetryableError(DeepmemError):
    def __init__(
        self, reason: str, retry_after: float | None = None, *, for_load: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.for_load = for_load
        """A refusal for load (429): the pacer hears of it."""


class OpenAIQuestionGenerator:
    """Questions for one chunk per chat completion, with structured output."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        *,
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_retry_after: float = 60.0,
        max_question_chars: int = MAX_QUESTION_CHARS,
        structured_output: bool = True,
        temperature: float | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._client = client.with_options(max_retries=0, timeout=timeout)
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_after = max_retry_after
        self.max_question_chars = max_question_chars
        self.structured_output = structured_output
        self.temperature = temperature
        self._sleep = sleep
        self._rng = rng
        self.stats = GeneratorStats()

    def _request(self, chunk: Chunk, count: int) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": USER_PROMPT.format(count=count, text=chunk.text)},
            ],
        }
        if self.structured_output:
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "questions",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {
                            "questions": {
                                "type": "array",
                                "items": {"type": "string"},
                                "minItems": count,
                                "maxItems": count,
                            }
                        },
                        "required": ["questions"],
                        "additionalProperties": False,
                    },
                },
            }
        if self.temperature is not None:
            request["temperature"] = self.temperature
        return request

    async def aclose(self) -> None:
        """Close the HTTP client while its event loop still runs."""
        await self._client.close()

    async def generate(
        self, chunk: Chunk, count: int, pacer: Pacer = UNPACED
    ) -> GeneratedQuestions:
        completion, retries = await self._complete(self._request(chunk, count), chunk, pacer)
        tokens = total_tokens(completion)
        self.stats.tokens_used += tokens
        return GeneratedQuestions(
            chunk_id=chunk.id,
            questions=self._questions_of(completion, chunk, count),
            llm_calls=retries + 1,
            tokens_used=tokens,
            retries=retries,
        )

    async def _complete(
        self, request: dict[str, Any], chunk: Chunk, pacer: Pacer
    ) -> tuple[dict[str, Any], int]:
        """The completion and how many retries it took; retried while another try may help.
        Every attempt waits for its turn from the pacer and reports a 429 to it at once."""
        retries = 0
        while True:
            sent = await pacer.turn()
            self.stats.llm_calls += 1
            try:
                return await self._call(request, chunk), retries
            except _RetryableError as exc:
                if exc.for_load:
                    pacer.pushed_back(sent, exc.retry_after)
                if retries >= self.max_retries:
                    raise TransientGenerationError(
                        f"LLM call for chunk {chunk.id} failed after {retries + 1} attempts "
                        f"(model {self.model}): {exc.reason}"
                    ) from exc.__cause__
                delay = self._delay(retries, exc.retry_after)
                logger.warning(
                    "LLM call failed, retrying",
                    extra={
                        "chunk_id": chunk.id,
                        "reason": exc.reason,
                        "retry": retries + 1,
                        "delay_s": round(delay, 3),
                    },
                )
                retries += 1
                self.stats.retries += 1
                if exc.for_load:  # the endpoint is busy, not broken: the slot may serve others
                    async with pacer.idle():
                        await self._sleep(delay)
                else:
                    await self._sleep(delay)

    def _questions_of(self, completion: Any, chunk: Chunk, count: int) -> list[str]:
        """The answer's usable questions, at most `count`; counted in the stats."""
        candidates, well_formed = parse_candidates(content_of(completion))
        if not well_formed:
            self.stats.malformed_answers += 1
        questions, rejected = clean_questions(candidates, count, self.max_question_chars)
        self.stats.rejected_questions += rejected
        if not questions:
            self.stats.empty_results += 1
            logger.warning(
                "LLM answer yielded no usable question",
                extra={"chunk_id": chunk.id, "well_formed": well_formed, "rejected": rejected},
            )
        return questions

    def _delay(self, retries: int, retry_after: float | None) -> float:
        if retry_after is not None:
            # The server said when; a little jitter (a tenth of the wait) keeps concurrent
            # callers from returning in the same instant without idling past the hint.
            wait = min(retry_after, self.max_retry_after)
            return wait + self._rng() * max(0.05, 0.1 * wait)
        return backoff_delay(retries, self.backoff_base, self.backoff_cap, self._rng)

    async def _call(self, request: dict[str, Any], chunk: Chunk) -> dict[str, Any]:
        """One attempt. Raise _RetryableError (cause kept) for what another try may fix,
        GenerationError for what it will not.

        Posted through the SDK's client (its auth, base URL, timeout, connection pool and
        status errors) but not through `chat.completions.create`: that path transforms the
        request by its type hints and builds a pydantic ChatCompletion of the answer, about
        2 ms of CPU a call that this adapter, which reads two fields, does not need."""
        try:
            completion = await self._client.post(
                "/chat/completions", body=request, cast_to=cast(Any, object)
            )
        except openai.APITimeoutError as exc:
            raise _RetryableError(f"timed out after {self.timeout:g}s") from exc
        except openai.APIConnectionError as exc:
            raise _RetryableError(f"connection error: {exc}") from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in _RETRYABLE_4XX or status >= 500:
                raise _RetryableError(
                    f"HTTP {status}",
                    parse_retry_after(dict(exc.response.headers)),
                    for_load=status == 429,
                ) from exc
            raise GenerationError(
                f"LLM refused the request for chunk {chunk.id} with HTTP {status} "
                f"({_STATUS_HINTS.get(status, 'client error')}; model {self.model}): "
                f"{exc.message}"
            ) from exc
        except openai.OpenAIError as exc:
            raise GenerationError(
                f"LLM call for chunk {chunk.id} failed: {type(exc).__name__}: {exc}"
            ) from exc
        except ValueError as exc:
            # A body cut short or not JSON at all (the SDK's json.loads raises): what a dropped
            # connection or a proxy gives, as transient as a 5xx and retried the same way.
            raise _RetryableError(f"answer body is not JSON: {exc}") from exc
        if not isinstance(completion, dict) or not completion.get("choices"):
            # A 200 whose body is not a chat completion (a proxy's error page, say): the
            # chunk must not be marked processed on it, so treat it as a failed call.
            raise _RetryableError("answer is not a chat completion")
        return completion


_STATUS_HINTS = {
    400: "bad request: check the model name and the request options",
    401: "unauthorized: check the API key",
    403: "forbidden: the key has no access to this model",
    404: "not found: check the model name and OPENAI_BASE_URL",
    422: "unprocessable request",
}
