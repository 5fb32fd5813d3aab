"""The paths bench/generation.py measures, and the loopback server they run against."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "layers" / "common"))
sys.path.insert(0, str(ROOT))

from deepmem.adapters.store.postgres import PostgresStore, connect_pool  # noqa: E402
from deepmem.config import Config  # noqa: E402
from deepmem.domain.chunks import Chunk, Lane  # noqa: E402
from deepmem.domain.models import Settings  # noqa: E402
from deepmem.domain.status import RunStatus  # noqa: E402
from deepmem.services.generation import GenerationService, LaneProgress, Plan  # noqa: E402
from deepmem.wiring import build_generation_service, generator_for  # noqa: E402

from tests.db import TestServer  # noqa: E402

ASL = ROOT / "statemachine" / "training.asl.json"
BENCH_VENV = Path(
    os.environ.get("DEEPMEM_BENCH_VENV", Path(tempfile.gettempdir()) / "deepmem-bench-venv")
)


class LLMServerProcess:
    """tests/fakes/llm_server.py run with `python -m`, driven over HTTP (/_faults, /_stats)."""

    def __init__(self, latency: float, rpm: int, window: float = 1.0) -> None:
        self.window = window
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fakes.llm_server",
                "--port",
                "0",
                "--latency",
                str(latency),
                "--rpm",
                str(self._per_window(rpm)),
                "--rpm-window",
                str(window),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"LLM server did not start: {line!r}")
        self.base_url = line.split(" ", 1)[1]
        self._admin = self.base_url.removesuffix("/v1")

    def _per_window(self, rpm: int) -> int:
        return max(1, round(rpm * self.window / 60))

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self._admin + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def configure(self, **faults: Any) -> None:
        self._call("POST", "/_faults", faults)

    def set_rpm(self, rpm: int) -> None:
        self.configure(rpm=self._per_window(rpm), rpm_window=self.window)

    def reset(self) -> None:
        self._call("POST", "/_reset", {})

    def counts(self) -> dict[str, Any]:
        stats = self._call("GET", "/_stats")
        by_status = stats["by_status"]
        return {
            "server_chat_calls": stats["chat"],
            "server_200": by_status.get("200", 0),
            "server_429": by_status.get("429", 0),
            "server_other_errors": sum(v for k, v in by_status.items() if k not in ("200", "429")),
            "server_max_in_flight": stats["max_in_flight"],
            "server_max_calls_per_chunk": stats["max_calls_per_chunk"],
        }

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()


# ---- 1. deepmem's generation path, as the state machine drives it -----------------------------


class CountingPostgresStore(PostgresStore):
    """The real adapter, counting its round trips (one SQL function call each)."""

    def __init__(self, url: str) -> None:
        super().__init__(connect_pool(url))
        self.round_trips: list[str] = []

    def _execute(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        self.round_trips.append(sql.split("public.", 1)[1].split("(", 1)[0])
        return super()._execute(sql, params)


def lane_retry_policy() -> list[dict[str, Any]]:
    """GenerateBatch's Retry rules for our own errors, read from the deployed ASL."""
    definition = json.loads(ASL.read_text())
    lanes = definition["States"]["GenerateLanes"]["ItemProcessor"]["States"]
    rules = lanes["GenerateBatch"]["Retry"]
    return [r for r in rules if not any(e.startswith("Lambda.") for e in r["ErrorEquals"])]


def call_lane(
    svc: GenerationService, plan: Plan, lane: Lane, retries: list[dict[str, Any]]
) -> tuple[LaneProgress, int]:
    """One GenerateBatch task: the lane call, retried by the ASL's rules (full jitter)."""
    attempts = 0
    while True:
        try:
            return svc.batch(plan.run_id, lane, setup=plan.setup, attempt=plan.attempt), attempts
        except Exception as exc:
            rule = next((r for r in retries if type(exc).__name__ in r["ErrorEquals"]), None)
            if rule is None or attempts >= rule["MaxAttempts"]:
                raise
            delay = rule["IntervalSeconds"] * rule["BackoffRate"] ** attempts
            time.sleep(random.random() * min(delay, rule.get("MaxDelaySeconds", delay)))
            attempts += 1


def run_deepmem(
    pg: TestServer, llm: LLMServerProcess, dataset: str, settings: Settings, rpm: int
) -> dict[str, Any]:
    """plan, every lane (threads, as the Map runs them) to its end, finish; a fresh database."""
    name, url = pg.fresh_database()
    store = CountingPostgresStore(url)
    retries = lane_retry_policy()
    try:
        store.update_settings(settings)
        run = store.create_run(dataset, None)
        config = Config.model_validate(
            {"DATABASE_URL": url, "OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "test"}
        )
        svc = build_generation_service(config, store=store)
        llm.set_rpm(rpm)
        llm.reset()
        store.round_trips.clear()
        started = time.monotonic()
        plan = svc.plan(run.id)

        def walk(lane: Lane) -> tuple[int, int, int, int]:
            calls = retried = batches = task_retries = 0
            while True:
                progress, again = call_lane(svc, plan, lane, retries)
                calls += progress.llm_calls
                retried += progress.retries
                batches += 1
                task_retries += again
                lane = progress.lane
                if progress.done:
                    return calls, retried, batches, task_retries

        with ThreadPoolExecutor(max_workers=len(plan.lanes)) as pool:
            walked = list(pool.map(walk, plan.lanes))
        svc.finish(run.id, attempt=plan.attempt)
        wall = time.monotonic() - started
        trips = list(store.round_trips)
        after = store.get_run(run.id)
        assert after.status == RunStatus.GENERATED, after.status
        writes = trips.count("record_training_batch")
        return {
            "name": "deepmem GenerationService",
            "rpm_cap": rpm,
            "chunks": after.processed_chunks,
            "pairs": after.pair_count,
            "llm_calls": sum(w[0] for w in walked),
            "retries": sum(w[1] for w in walked),
            "lane_calls": sum(w[2] for w in walked),
            "lane_call_retries": sum(w[3] for w in walked),
            "store_round_trips": len(trips),  # plan, every lane call and finish
            "batch_writes": writes,
            "batches": -(-after.processed_chunks // settings.batch_size),
            "wall_s": round(wall, 2),
            "chunks_per_s": round(after.processed_chunks / wall, 2),
            **llm.counts(),
        }
    finally:
        store.close()
        pg.drop_database(name)


# ---- 2. a plain sequential loop over the same generator ----------------------------------------


def run_sequential(llm: LLMServerProcess, chunks: list[Chunk], questions: int) -> dict[str, Any]:
    config = Config.model_validate({"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "test"})
    settings = Settings(questions_per_chunk=questions)

    async def loop() -> tuple[int, int, int, float]:
        generator = generator_for(config)(settings)
        started = time.monotonic()
        calls = retries = pairs = 0
        for chunk in chunks:
            result = await generator.generate(chunk, questions)
            calls += result.llm_calls
            retries += result.retries
            pairs += len(result.questions)
        wall = time.monotonic() - started
        await generator.aclose()  # type: ignore[attr-defined]
        return calls, retries, pairs, wall

    calls, retries, pairs, wall = asyncio.run(loop())
    return {
        "name": "sequential loop, same generator",
        "chunks": len(chunks),
        "pairs": pairs,
        "llm_calls": calls,
        "retries": retries,
        "wall_s": round(wall, 2),
        "chunks_per_s": round(len(chunks) / wall, 2),
    }


# ---- 3. LlamaIndex, in the bench group's own environment ---------------------------------------


def llamaindex_command() -> tuple[list[str], dict[str, str]]:
    """This interpreter when it has LlamaIndex (a `--group bench` environment), else `uv run`
    in the bench group's environment (BENCH_VENV; uv installs it from the lock file once)."""
    script = str(ROOT / "bench" / "llamaindex_peer.py")
    try:
        import llama_index.finetuning  # noqa: F401
    except ImportError:
        env = os.environ | {"UV_PROJECT_ENVIRONMENT": str(BENCH_VENV)}
        env.pop("VIRTUAL_ENV", None)
        command = ["uv", "run", "--frozen", "--no-dev", "--group", "bench", "--project", str(ROOT)]
        return [*command, "python", script], env
    return [sys.executable, script], dict(os.environ)


def start_llamaindex(base_url: str, chunks: list[Chunk], questions: int) -> subprocess.Popen[str]:
    command, env = llamaindex_command()
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # `uv run` starts the interpreter as its child: stop both
    )
    assert proc.stdin is not None
    job = {"base_url": base_url, "questions": questions}
    proc.stdin.write(json.dumps(job | {"chunks": [{"id": c.id, "text": c.text} for c in chunks]}))
    proc.stdin.close()
    return proc


def finish_llamaindex(proc: subprocess.Popen[str], llm: LLMServerProcess) -> dict[str, Any]:
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait(timeout=60)
    row: dict[str, Any] = {"name": "LlamaIndex generate_qa_embedding_pairs"}
    try:
        row |= json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return row | {"error": f"no result (exit {proc.returncode}): {out[-300:]!r}"}
    counts = llm.counts()
    return row | {
        "llm_calls": counts["server_chat_calls"],
        "retries": counts["server_chat_calls"] - counts["server_200"],
        **counts,
    }


def run_peers(
    seq_llm: LLMServerProcess, lines_llm: LLMServerProcess, chunks: list[Chunk], questions: int
) -> list[dict[str, Any]]:
    """The sequential loop and LlamaIndex at once, each on its own server (same latency, same
    cap; LlamaIndex's answers in lines, as it parses them). Both call one chunk at a time, far
    under the cap, so neither slows the other."""
    seq_llm.reset()
    lines_llm.reset()
    proc = start_llamaindex(lines_llm.base_url, chunks, questions)
    try:
        sequential = run_sequential(seq_llm, chunks, questions) | seq_llm.counts()
        return [sequential, finish_llamaindex(proc, lines_llm)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
