"""The fake LLM server run as its own process, as the crash-and-resume tests use it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import openai
from deepmem.adapters.generators.openai import OpenAIQuestionGenerator
from deepmem.domain.chunks import Chunk

from tests.fakes.llm_server import chunk_key, questions_for

ROOT = Path(__file__).resolve().parents[2]


def test_server_process_applies_faults_and_reports_counts_over_http() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.llm_server",
            "--port",
            "0",
            "--fail-first",
            "1",
            "--fail-status",
            "503",
            "--dim",
            "8",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("LISTENING http://127.0.0.1:")
        base_url = line.split()[1]
        root = base_url.removesuffix("/v1")
        chunk = Chunk(id="c1", text="Step Functions retries tasks with backoff and jitter.")

        async def generate() -> list[str]:
            client = openai.AsyncOpenAI(base_url=base_url, api_key="test")
            generator = OpenAIQuestionGenerator(client, "fake", timeout=5, backoff_base=0.01)
            try:
                return (await generator.generate(chunk, 3)).questions
            finally:
                await client.close()

        assert asyncio.run(generate()) == questions_for(chunk.text, 3)
        stats = httpx.get(f"{root}/_stats", timeout=5).json()
        assert stats["by_status"] == {"200": 1, "503": 1}
        assert stats["per_chunk"] == {chunk_key(chunk.text): 2}

        changed = httpx.post(f"{root}/_faults", json={"fail_first": 1, "fail_status": 401})
        assert changed.json()["fail_status"] == 401
        assert httpx.post(f"{root}/_faults", json={"no_such_knob": 1}).status_code == 400
        refused = httpx.post(f"{base_url}/embeddings", json={"model": "m", "input": ["a"]})
        assert refused.status_code == 401
        vectors = httpx.post(f"{base_url}/embeddings", json={"model": "m", "input": ["a"]})
        assert len(vectors.json()["data"][0]["embedding"]) == 8

        assert httpx.post(f"{root}/_reset").status_code == 200
        assert httpx.get(f"{root}/_stats").json()["total"] == 0
    finally:
        process.terminate()
        process.wait(timeout=10)
