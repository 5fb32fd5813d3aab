"""Training synthetic pairs in bounded memory across invocations: the real ASL's
submit → wait → check loop on the local workflow carries a streamed query-adapter job whose
time budget per invocation is scaled down (from 600 s to 0.2 s, shards of 1,000 pairs instead
of 20,000, so the job cannot finish in one call), in a process of its own whose peak RSS is
asserted. The embedder is the cheap HashingEmbedder (16 dimensions): what is measured is the
job's own memory, not a model's.

The run is sized to finish in well under 90 s on an idle 2-core machine: 40,000 pairs in 40
shards. The bound: the process's baseline (Python, numpy, DeepLake, moto, psycopg: ~300 MiB
here) plus the corpus, one shard (the page of pair objects and their embeddings), the
held-out set and W; none of it grows with the pair count. `bench/scale.py` measures the same
job at 300k pairs and more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deepmem.adapters.dataset.deeplake import DeepLakeChunkSource
from deepmem.adapters.store.postgres import PostgresStore
from deepmem.domain.models import BatchRecord, ChunkQuestions
from deepmem.domain.status import RunStatus

from tests.fakes.embedder import HashingEmbedder
from tests.integration.generation_support import build_test_dataset

ROOT = Path(__file__).resolve().parents[2]
CHUNKS = 800
PER_CHUNK = 50  # 40k pairs
SHARD_PAIRS = 1_000
SECONDS_PER_CALL = "0.2"
BOUND_MIB = 750


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_test_dataset(tmp_path_factory.mktemp("scale"), CHUNKS, HashingEmbedder(16))


@pytest.mark.timeout(300)
def test_pairs_train_across_invocations_in_bounded_memory(
    postgres_store: PostgresStore, database_url: str, dataset: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    chunk_ids = [c.id for c in DeepLakeChunkSource(dataset).read(0, CHUNKS)]
    run = postgres_store.create_run(dataset, None)
    postgres_store.set_total_chunks(run.id, CHUNKS, attempt=run.attempt)
    for start in range(0, CHUNKS, 100):
        chunks = [
            ChunkQuestions(
                chunk_id=chunk_id,
                questions=[f"What does {chunk_id} say about point {q}?" for q in range(PER_CHUNK)],
            )
            for chunk_id in chunk_ids[start : start + 100]
        ]
        postgres_store.record_batch(BatchRecord(run_id=run.id, attempt=run.attempt, chunks=chunks))
    postgres_store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATED)
    assert postgres_store.get_run(run.id).pair_count == CHUNKS * PER_CHUNK

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers" / "common")]),
    }
    command = [
        sys.executable,
        "-m",
        "tests.integration.training_scale_worker",
        database_url,
        str(run.id),
        dataset,
        str(tmp_path / "artifacts"),
        SECONDS_PER_CALL,
        str(SHARD_PAIRS),
    ]
    print(f"pairs written at {time.monotonic() - began:.0f} s", flush=True)
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=280, env=env, cwd=ROOT
    )
    print(f"trained at {time.monotonic() - began:.0f} s", flush=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    run = postgres_store.get_run(run.id)
    assert result["state"] == "SUCCEEDED" and run.status is RunStatus.COMPLETED
    # It could not finish in one invocation: submit, then several checks continued it.
    assert result["actions"][0] == "submit" and result["actions"].count("check") >= 3
    metrics = run.metrics
    assert metrics["streamed"] is True and metrics["pairs"] == CHUNKS * PER_CHUNK
    assert metrics["invocations"] == len(result["actions"])
    assert 0 < metrics["heldout_questions"] <= 2_048
    print(f"peak RSS {result['peak_rss_mib']:.0f} MiB over {len(result['actions'])} invocations")
    assert result["peak_rss_mib"] < BOUND_MIB
