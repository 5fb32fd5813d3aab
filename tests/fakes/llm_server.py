"""An OpenAI-compatible HTTP server on loopback, with faults on demand and call counters.

In a test::

    with FakeLLMServer(latency=0.05) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test")
        ...
        server.configure(fail_first=2, fail_status=503)   # changeable at runtime
        assert server.max_calls_per_chunk() == 1

As a separate process (so another process can be killed while the server keeps counting)::

    python -m tests.fakes.llm_server --port 0 --latency 0.3 --rpm 600

prints ``LISTENING http://127.0.0.1:PORT/v1`` once it accepts connections. Over HTTP:
``GET /_stats`` (counters), ``POST /_faults`` (JSON body with any knob of `Faults`; resets the
"first N" counters), ``POST /_reset`` (zero the counters).

The questions of a chat completion are derived from the chunk text of the last user message:
the text between ``<chunk>`` and ``</chunk>`` when present, else the whole message. Calls are
counted per chunk under `chunk_key(text)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import re
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest

ContentMode = Literal["json", "truncated_json", "lines", "garbage", "empty", "prose", "nul"]
CONTENT_MODES: tuple[str, ...] = (
    "json",
    "truncated_json",
    "lines",
    "garbage",
    "empty",
    "prose",
    "nul",
)
BODY_MODES: tuple[str, ...] = ("completion", "truncated", "not_completion")
PROSE = (
    "I am sorry, but I cannot write questions about this passage. It describes an experiment "
    "and its results in some detail. Let me know if you would like a summary instead."
)

_CHUNK_RE = re.compile(r"<chunk>(.*?)</chunk>", re.DOTALL)
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]{3,}")
_COUNT_RE = re.compile(r"\b(\d{1,2})\s+(?:distinct\s+|different\s+)?questions?\b", re.IGNORECASE)
_STOPWORDS = frozenset(
    [
        "this",
        "that",
        "with",
        "from",
        "have",
        "were",
        "they",
        "their",
        "there",
        "which",
        "what",
        "when",
        "where",
        "about",
        "into",
        "also",
        "been",
        "more",
        "most",
        "some",
        "such",
        "than",
        "then",
        "these",
        "those",
        "will",
        "would",
        "could",
        "should",
        "does",
        "each",
        "other",
        "only",
        "over",
        "very",
        "your",
        "them",
        "onto",
        "upon",
        "using",
    ]
)
_TEMPLATES = (
    "What is {a}?",
    "How does {a} relate to {b}?",
    "Why does {a} matter for {b}?",
    "When is {a} used with {b}?",
    "Which {a} is described for {b}?",
    "How is {a} measured?",
    "What happens to {a} when {b} changes?",
    "Who uses {a}?",
    "Where does {a} come from?",
    "What limits {a}?",
)
META_LINE = "Here are three questions:"


def chunk_key(text: str) -> str:
    """The key calls are counted under: a short hash of the chunk text."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def questions_for(text: str, count: int) -> list[str]:
    """Deterministic, distinct questions built from the chunk's own words."""
    words: list[str] = []
    for word in _WORD_RE.findall(text):
        if word.lower() not in _STOPWORDS and word.lower() not in (w.lower() for w in words):
            words.append(word)
    if not words:
        words = [f"topic-{chunk_key(text)[:6]}"]
    questions: list[str] = []
    for i in range(count):
        a = words[i % len(words)]
        b = words[(i + 1) % len(words)] if len(words) > 1 else "it"
        questions.append(_TEMPLATES[i % len(_TEMPLATES)].format(a=a, b=b))
    return questions


def vector_for(text: str, dim: int) -> list[float]:
    """A deterministic unit vector from the text's hash (SHA-256 in counter mode)."""
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        block = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        for (raw,) in struct.iter_unpack(">I", block):
            values.append(raw / 2**31 - 1.0)
        counter += 1
    values = values[:dim]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


@dataclass
class Faults:
    """Every fault knob. `configure()` (or ``POST /_faults``) replaces them at runtime."""

    latency: float = 0.0
    """Seconds added to every answered call."""
    rpm: int | None = None
    """Requests admitted per `rpm_window` seconds; over the cap: 429 with Retry-After."""
    rpm_window: float = 60.0
    fail_first: int = 0
    """The next N calls answer `fail_status` (429, 500, 503, 400, 401, ...)."""
    fail_status: int = 500
    retry_after: str | None = None
    """Retry-After header sent with failures (seconds or an HTTP date); None sends none."""
    hang_first: int = 0
    """The next N calls hang `hang_seconds` (past the client's timeout), then close unanswered."""
    hang_seconds: float = 30.0
    content_mode: str = "json"
    """How the questions are written: json | truncated_json | lines | garbage | empty | prose
    (an answer without a question) | nul (JSON whose questions hold NUL characters)."""
    body_mode: str = "completion"
    """The 200's body: completion | truncated (the JSON cut short) | not_completion (JSON,
    but not a chat completion: what a proxy's error page in JSON looks like)."""
    meta_lines: bool = False
    """Mix meta lines and numbered prefixes into the questions."""
    dim: int = 64
    """Embedding dimension when the request does not ask for one."""
    api_key: str | None = None
    """When set, a call without ``Authorization: Bearer <api_key>`` answers 401."""

    def __post_init__(self) -> None:
        if self.content_mode not in CONTENT_MODES:
            raise ValueError(f"content_mode must be one of {CONTENT_MODES}")
        if self.body_mode not in BODY_MODES:
            raise ValueError(f"body_mode must be one of {BODY_MODES}")


class FakeLLMServer:
    """The server, run in a background thread. Counters are plain attributes, read under
    `lock` when exactness matters (or use `stats()`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **faults: Any) -> None:
        self.faults = Faults(**faults)
        self.lock = threading.Lock()
        self._stopping = threading.Event()
        self._reset_counters()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.fake = self
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeLLMServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes hanging handlers
        if self._thread is not None:  # shutdown() waits for a serve_forever that never ran
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- knobs and counters ----------------------------------------------------------------
    def configure(self, **changes: Any) -> None:
        """Change fault knobs; the "first N" counts start again from now."""
        with self.lock:
            self.faults = dataclasses.replace(self.faults, **changes)
            self._failed = 0
            self._hung = 0
            self._admitted.clear()

    def reset(self) -> None:
        with self.lock:
            self._reset_counters()

    def _reset_counters(self) -> None:
        self.calls_total = 0
        self.chat_calls = 0
        self.embedding_calls = 0
        self.status_counts: Counter[int] = Counter()
        self.calls_per_chunk: Counter[str] = Counter()
        self.answered_per_chunk: Counter[str] = Counter()
        self.tokens_total = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._failed = 0
        self._hung = 0
        self._admitted: deque[float] = deque()

    def calls_for(self, chunk_text: str) -> int:
        with self.lock:
            return self.calls_per_chunk[chunk_key(chunk_text)]

    def max_calls_per_chunk(self) -> int:
        with self.lock:
            return max(self.calls_per_chunk.values(), default=0)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "total": self.calls_total,
                "chat": self.chat_calls,
                "embeddings": self.embedding_calls,
                "by_status": {str(k): v for k, v in sorted(self.status_counts.items())},
                "per_chunk": dict(self.calls_per_chunk),
                "answered_per_chunk": dict(self.answered_per_chunk),
                "distinct_chunks": len(self.calls_per_chunk),
                "max_calls_per_chunk": max(self.calls_per_chunk.values(), default=0),
                "tokens": self.tokens_total,
                "max_in_flight": self.max_in_flight,
                "faults": dataclasses.asdict(self.faults),
            }

    # ---- decisions, under the lock ---------------------------------------------------------
    def _admit(self, authorization: str | None) -> tuple[Faults, int | None, str | None, bool]:
        """Count the call and decide its fate: (faults, error status, Retry-After, hang)."""
        with self.lock:
            self.calls_total += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            f = self.faults
            if f.api_key is not None and authorization != f"Bearer {f.api_key}":
                return f, 401, None, False
            if self._failed < f.fail_first:
                self._failed += 1
                return f, f.fail_status, f.retry_after, False
            if f.rpm is not None:
                now = time.monotonic()
                while self._admitted and now - self._admitted[0] >= f.rpm_window:
                    self._admitted.popleft()
                if len(self._admitted) >= f.rpm:
                    wait = self._admitted[0] + f.rpm_window - now
                    return f, 429, str(max(1, math.ceil(wait))), False
                self._admitted.append(now)
            hang = self._hung < f.hang_first
            if hang:
                self._hung += 1
            return f, None, None, hang

    def _finish(self, status: int, tokens: int = 0, key: str | None = None) -> None:
        with self.lock:
            self.in_flight -= 1
            self.status_counts[status] += 1
            self.tokens_total += tokens
            if key is not None and status == 200:
                self.answered_per_chunk[key] += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 32+ clients connect at once; the default backlog of 5 stalls
    allow_reuse_address = True
    fake: FakeLLMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) resets the connection: expected, not noise.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # ---- plumbing --------------------------------------------------------------------------
    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_broken(self, body_mode: str) -> None:
        """A 200 whose body is not a usable chat completion."""
        if body_mode == "truncated":
            data = json.dumps({"id": "chatcmpl-x", "object": "chat.completion", "choices": [{}]})
            data = data[: len(data) // 2]
        else:
            data = json.dumps({"status": "ok", "message": "upstream busy"})
        raw = data.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw or b"{}")

    def _error(self, status: int, retry_after: str | None = None) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        kind = {400: "invalid_request_error", 401: "invalid_api_key", 429: "rate_limit_exceeded"}
        self._send(
            status,
            {
                "error": {
                    "message": f"fake error {status}",
                    "type": kind.get(status, "server_error"),
                    "param": None,
                    "code": None,
                }
            },
            headers,
        )

    # ---- routes ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/_stats":
            self._send(200, self.server.fake.stats())
        elif self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        fake = self.server.fake
        path = self.path.rstrip("/")
        try:
            body = self._read_json()
        except ValueError:
            self._send(400, {"error": {"message": "body is not JSON"}})
            return
        if path == "/_faults":
            try:
                fake.configure(**body)
            except (TypeError, ValueError) as exc:
                self._send(400, {"error": {"message": str(exc)}})
                return
            self._send(200, dataclasses.asdict(fake.faults))
        elif path == "/_reset":
            fake.reset()
            self._send(200, {"ok": True})
        elif path == "/v1/chat/completions":
            self._chat(fake, body)
        elif path == "/v1/embeddings":
            self._embeddings(fake, body)
        else:
            self._send(404, {"error": {"message": f"no route {path}"}})

    def _gate(self, fake: FakeLLMServer, key: str | None) -> tuple[Faults, bool]:
        """Apply faults; True when an error was already answered."""
        faults, status, retry_after, hang = fake._admit(self.headers.get("Authorization"))
        if key is not None:
            with fake.lock:
                fake.calls_per_chunk[key] += 1
        if status is not None:
            fake._finish(status)
            self._error(status, retry_after)
            return faults, True
        if hang:
            # Past the client's timeout an answer means nothing: close without one, counted
            # under 499 (nginx's "client closed request").
            fake._stopping.wait(faults.hang_seconds)
            fake._finish(499)
            self.close_connection = True
            return faults, True
        if faults.latency > 0:
            time.sleep(faults.latency)
        return faults, False

    def _chat(self, fake: FakeLLMServer, body: dict[str, Any]) -> None:
        messages = body.get("messages") or []
        user = [m for m in messages if m.get("role") == "user"]
        prompt = _text_of(user[-1].get("content")) if user else ""
        match = _CHUNK_RE.search(prompt)
        chunk = match.group(1).strip() if match else prompt
        key = chunk_key(chunk)
        with fake.lock:
            fake.chat_calls += 1
        faults, answered = self._gate(fake, key)
        if answered:
            return
        questions = questions_for(chunk, _requested_count(body, prompt))
        content = _render(questions, faults)
        prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in messages)
        completion_tokens = len(content.split())
        if faults.body_mode != "completion":
            try:
                self._send_broken(faults.body_mode)
            finally:
                fake._finish(200, 0, key)
            return
        try:
            self._send(
                200,
                {
                    "id": f"chatcmpl-{key}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                },
            )
        finally:
            fake._finish(200, prompt_tokens + completion_tokens, key)

    def _embeddings(self, fake: FakeLLMServer, body: dict[str, Any]) -> None:
        with fake.lock:
            fake.embedding_calls += 1
        faults, answered = self._gate(fake, None)
        if answered:
            return
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            fake._finish(400)
            self._error(400)
            return
        dim = int(body.get("dimensions") or faults.dim)
        tokens = sum(len(t.split()) for t in texts)
        try:
            self._send(
                200,
                {
                    "object": "list",
                    "model": body.get("model", "fake"),
                    "data": [
                        {"object": "embedding", "index": i, "embedding": vector_for(t, dim)}
                        for i, t in enumerate(texts)
                    ],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                },
            )
        finally:
            fake._finish(200, tokens)


def _text_of(content: Any) -> str:
    """Message content is a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _requested_count(body: dict[str, Any], prompt: str) -> int:
    schema = (((body.get("response_format") or {}).get("json_schema") or {}).get("schema")) or {}
    items = (schema.get("properties") or {}).get("questions") or {}
    for bound in ("maxItems", "minItems"):
        if isinstance(items.get(bound), int) and items[bound] > 0:
            return int(items[bound])
    match = _COUNT_RE.search(prompt)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else 3


def _render(questions: list[str], faults: Faults) -> str:
    if faults.meta_lines:
        questions = [META_LINE, *(f"{i}. {q}" for i, q in enumerate(questions, 1)), ""]
    match faults.content_mode:
        case "json":
            return json.dumps({"questions": questions})
        case "truncated_json":
            text = json.dumps({"questions": questions})
            return text[: max(1, len(text) - 12)]
        case "lines":
            return "\n".join(questions)
        case "garbage":
            return "{{{ this is not json at all"
        case "prose":
            return PROSE
        case "nul":
            return json.dumps({"questions": [q.replace(" ", " \u0000", 1) for q in questions]})
        case _:
            return ""


def http_date(seconds_from_now: float) -> str:
    """An HTTP date for a Retry-After header."""
    return formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.fixture(name="fake_llm_server")
def fake_llm_server_fixture() -> Iterator[FakeLLMServer]:
    """Import into a test module to use: ``from tests.fakes.llm_server import
    fake_llm_server_fixture  # noqa: F401``."""
    with FakeLLMServer() as server:
        yield server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rpm", type=int, default=None)
    parser.add_argument("--rpm-window", type=float, default=60.0)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--fail-status", type=int, default=500)
    parser.add_argument("--retry-after", default=None)
    parser.add_argument("--hang-first", type=int, default=0)
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--content-mode", choices=CONTENT_MODES, default="json")
    parser.add_argument("--meta-lines", action="store_true")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)
    server = FakeLLMServer(
        host=args.host,
        port=args.port,
        latency=args.latency,
        rpm=args.rpm,
        rpm_window=args.rpm_window,
        fail_first=args.fail_first,
        fail_status=args.fail_status,
        retry_after=args.retry_after,
        hang_first=args.hang_first,
        hang_seconds=args.hang_seconds,
        content_mode=args.content_mode,
        meta_lines=args.meta_lines,
        dim=args.dim,
        api_key=args.api_key,
    )
    print(f"LISTENING {server.base_url}", flush=True)
    try:
        server._httpd.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server._stopping.set()
        server._httpd.server_close()


if __name__ == "__main__":
    main()
