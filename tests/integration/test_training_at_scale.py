"""Training 300,000 synthetic pairs in bounded memory across invocations: the real ASL's
submit → wait → check loop on the local workflow carries a streamed query-adapter job whose
time budget per invocation is scaled down (from 600 s to 1 s, with the deployed shards of
10,000 pairs, so the job cannot finish in one call), in a process of its own whose peak RSS
(`VmHWM` of `/proc/self/status`) is asserted.

Cheap on purpose, so the run fits the suite (89 s measured on 2 shared cores at load ~4.5):
- the embedder is the cheap deterministic HashingEmbedder (`tests/fakes/embedder.py`, 16
  dimensions, feature hashing: ~30 µs a question), not a model: what is measured is the job's
  own memory, not a model's;
- the 300,000 pairs are written by one `insert ... select` over `generate_series` straight
  into `training_pairs` (the run's counters set beside them), not through 3,000 batches of
  `record_training_batch`: generation is not what this test is about.

The bound: the process's baseline (Python, numpy, DeepLake, moto, psycopg: ~300 MiB here)
plus the corpus, one shard (the page of pair objects and their embeddings), the held-out set
and W; none of it grows with the pair count (README, "How large a run the defaults handle").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from deepmem.adapters.dataset.deeplake import DeepLakeChunkSource
from deepmem.adapters.store.postgres import PostgresStore
from deepmem.domain.status import RunStatus

from tests.fakes.embedder import HashingEmbedder
from tests.integration.generation_support import build_test_dataset

ROOT = Path(__file__).resolve().parents[2]
CHUNKS = 1_500
PER_CHUNK = 200  # 300k pairs
PAIRS = CHUNKS * PER_CHUNK
SECONDS_PER_CALL = "1.0"
BOUND_MIB = 750


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_test_dataset(tmp_path_factory.mktemp("scale"), CHUNKS, HashingEmbedder(16))


def write_pairs(database_url: str, run_id: object, chunk_ids: list[str]) -> None:
    """`PER_CHUNK` questions of every chunk in one statement, in chunk order, and the run's
    counters as `record_training_batch` would have left them."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "insert into public.training_pairs (run_id, chunk_id, question)"
            " select %(run)s, c.chunk_id, 'What does ' || c.chunk_id || ' say about point '"
            "        || q || '?'"
            "   from unnest(%(chunks)s::text[]) with ordinality as c(chunk_id, n),"
            "        generate_series(1, %(per)s) as q"
            "  order by c.n, q",
            {"run": run_id, "chunks": chunk_ids, "per": PER_CHUNK},
        )
        conn.execute(
            "update public.training_runs set processed_chunks = %(n)s, pair_count = %(pairs)s"
            " where id = %(run)s",
            {"run": run_id, "n": len(chunk_ids), "pairs": len(chunk_ids) * PER_CHUNK},
        )


@pytest.mark.timeout(600)
def test_300k_pairs_train_across_invocations_in_bounded_memory(
    postgres_store: PostgresStore, database_url: str, dataset: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    chunk_ids = [c.id for c in DeepLakeChunkSource(dataset).read(0, CHUNKS)]
    run = postgres_store.create_run(dataset, None)
    postgres_store.set_total_chunks(run.id, CHUNKS, attempt=run.attempt)
    write_pairs(database_url, run.id, chunk_ids)
    postgres_store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATED)
    assert postgres_store.get_run(run.id).pair_count == PAIRS
    assert len(postgres_store.pairs_after(run.id, after=0, limit=10_000)) == 10_000

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
    ]
    print(f"pairs written at {time.monotonic() - began:.0f} s", flush=True)
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=580, env=env, cwd=ROOT
    )
    print(f"trained at {time.monotonic() - began:.0f} s", flush=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    run = postgres_store.get_run(run.id)
    assert result["state"] == "SUCCEEDED" and run.status is RunStatus.COMPLETED
    # It could not finish in one invocation: submit, then several checks continued it.
    assert result["actions"][0] == "submit" and result["actions"].count("check") >= 3
    metrics = run.metrics
    assert metrics["streamed"] is True and metrics["pairs"] == PAIRS
    assert metrics["shards"] == PAIRS // 10_000 and metrics["shards_reused"] == 0
    assert metrics["invocations"] == len(result["actions"])
    assert 0 < metrics["heldout_questions"] <= 2_048
    # Every pair is training's, early stopping's or the guard's (`metrics.guard.pairs`).
    assert (
        metrics["train_questions"] + metrics["heldout_questions"] + metrics["guard"]["pairs"]
        == PAIRS
    )
    assert metrics["guard"]["pairs"] == 2_048  # the guard's bound
    print(f"peak RSS {result['peak_rss_mib']:.0f} MiB over {len(result['actions'])} invocations")
    assert result["peak_rss_mib"] < BOUND_MIB
