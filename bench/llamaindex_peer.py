"""LlamaIndex's `generate_qa_embedding_pairs` against the loopback LLM server, for
bench/generation.py (which runs it in the `bench` dependency group's own environment:
LlamaIndex needs openai<3, the project's environment has openai 3).

Reads one JSON object on stdin: {"base_url", "questions", "chunks": [{"id", "text"}, ...]};
writes one JSON object on stdout: chunks, pairs, wall_s (imports before the clock), versions,
or "error". No deepmem import: only LlamaIndex and the standard library.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TQDM_DISABLE": "1",
    "NO_PROXY": "127.0.0.1,localhost",
}.items():
    os.environ.setdefault(_name, _value)


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def run(job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from llama_index.core.schema import TextNode
            from llama_index.finetuning import generate_qa_embedding_pairs
            from llama_index.llms.openai import OpenAI
    except Exception as exc:  # an honest "could not run", never a made-up number
        return {"error": f"import failed: {type(exc).__name__}: {exc}"}
    result["version"] = _version("llama-index-finetuning")
    result["llm_version"] = _version("llama-index-llms-openai")
    result["openai_version"] = _version("openai")
    nodes = [TextNode(id_=c["id"], text=c["text"]) for c in job["chunks"]]
    model = OpenAI(
        model="gpt-4o-mini", api_base=job["base_url"], api_key="test", max_retries=3, timeout=60
    )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            started = time.monotonic()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dataset = generate_qa_embedding_pairs(
                    nodes,
                    model,
                    num_questions_per_chunk=job["questions"],
                    output_path=str(Path(tmp) / "qa.json"),
                    verbose=False,
                )
            wall = time.monotonic() - started
        except Exception as exc:
            return result | {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=5),
            }
    done = len(dataset.corpus)
    return result | {
        "chunks": done,
        "pairs": len(dataset.queries),
        "wall_s": round(wall, 2),
        "chunks_per_s": round(done / wall, 2),
    }


if __name__ == "__main__":
    print(json.dumps(run(json.load(sys.stdin))), flush=True)
