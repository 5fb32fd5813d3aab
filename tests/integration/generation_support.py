"""Shared by the generation tests and the worker process they kill: a corpus, a dataset built
from it, and the generation service wired to the real store, dataset and LLM endpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from uuid import UUID

from deepmem.config import Config
from deepmem.domain.chunks import Lane
from deepmem.local.dataset_builder import build_dataset
from deepmem.ports import Embedder
from deepmem.services.generation import GenerationService
from deepmem.wiring import build_generation_service

from tests.fakes.embedder import HashingEmbedder

TOPICS = [
    "boundary layer",
    "shock wave",
    "heat transfer",
    "wing flutter",
    "turbulent flow",
    "pressure gradient",
    "skin friction",
    "supersonic inlet",
    "vortex shedding",
    "nozzle flow",
]


def write_corpus(folder: Path, documents: int) -> Path:
    """`documents` small text files, each becoming one chunk (short enough not to split)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(documents):
        topic = TOPICS[i % len(TOPICS)]
        (folder / f"doc{i:04d}.txt").write_text(
            f"Report {i} on the {topic}. The {topic} measured in experiment {i} depends on the "
            f"Reynolds number {1000 + i} and the Mach number {i % 7}. Engineers observed that "
            f"the {topic} changes near sample {i * 3}."
        )
    return folder


def build_test_dataset(folder: Path, documents: int, embedder: Embedder | None = None) -> str:
    path = str(folder / "dataset")
    corpus = write_corpus(folder / "corpus", documents)
    count = build_dataset(corpus, path, embedder or HashingEmbedder(16))
    assert count == documents, f"expected one chunk per document, got {count}"
    return path


def service(database_url: str, base_url: str | None) -> GenerationService:
    config = Config.model_validate(
        {"DATABASE_URL": database_url, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "test"}
        if base_url
        else {"DATABASE_URL": database_url, "DEEPMEM_GENERATOR": "offline"}
    )
    return build_generation_service(config)


def walk_lanes(svc: GenerationService, run_id: UUID) -> None:
    """What the state machine does: plan, every lane to the end, finish."""
    plan = svc.plan(run_id)
    for lane in plan.lanes:
        current: Lane = lane
        while True:
            progress = svc.batch(run_id, current, setup=plan.setup)
            current = progress.lane
            if progress.done:
                break
    svc.finish(run_id)


def main() -> None:
    """The worker a crash test kills: walks every lane of a run, printing progress."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args()
    svc = service(args.database_url, args.base_url)
    run_id = UUID(args.run_id)
    plan = svc.plan(run_id)
    for lane in plan.lanes:
        current = lane
        while True:
            progress = svc.batch(run_id, current, setup=plan.setup)
            print(json.dumps({"lane": current.lane, "new_chunks": progress.new_chunks}), flush=True)
            current = progress.lane
            if progress.done:
                break


if __name__ == "__main__":
    main()
