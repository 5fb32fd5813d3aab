"""The invariants under real concurrency, on the real database."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from uuid import uuid4

from deepmem.adapters.store.postgres import PostgresStore
from deepmem.domain.errors import BlockingRunExistsError
from deepmem.domain.models import BatchRecord, ChunkQuestions
from deepmem.domain.status import RunStatus


def _race(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in `count` threads released at the same instant."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_32_concurrent_creates_one_succeeds(postgres_store: PostgresStore) -> None:
    results = _race(32, lambda i: postgres_store.create_run(f"ds-{i % 3}", uuid4()))
    created = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, BlockingRunExistsError)]
    assert len(created) == 1
    assert len(refused) == 31
    assert {r.blocking_run_id for r in refused} == {str(created[0].id)}
    assert len(postgres_store.list_runs()) == 1


def test_32_concurrent_proceeds_one_succeeds(postgres_store: PostgresStore) -> None:
    run = postgres_store.create_run("ds", None)
    postgres_store.transition(
        run.id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED, error_message="boom"
    )
    results = _race(
        32,
        lambda _: postgres_store.transition(
            run.id, RunStatus.GENERATING_FAILED, RunStatus.GENERATING, next_attempt=True
        ),
    )
    assert not [r for r in results if isinstance(r, Exception)]
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert postgres_store.get_run(run.id).attempt == 2


def test_8_threads_overlapping_batches_lose_and_duplicate_nothing(
    postgres_store: PostgresStore,
) -> None:
    run = postgres_store.create_run("ds", None)
    postgres_store.set_total_chunks(run.id, 200, attempt=1)

    def questions(chunk: int) -> list[str]:
        return [f"What about chunk {chunk} ({k})?" for k in range(chunk % 4)]

    def work(i: int) -> None:
        # Each thread writes chunks [20 i, 20 i + 60): every chunk is written by up to 3.
        for start in range(20 * i, 20 * i + 60, 10):
            chunks = [
                ChunkQuestions(chunk_id=f"c{c:03d}", questions=questions(c))
                for c in range(start, min(start + 10, 200))
            ]
            postgres_store.record_batch(BatchRecord(run_id=run.id, attempt=1, chunks=chunks))

    results = _race(8, work)
    assert [r for r in results if isinstance(r, Exception)] == []
    # Threads cover chunks 0..199 (thread 7 ends at 200).
    after = postgres_store.get_run(run.id)
    pairs = postgres_store.list_pairs(run.id, limit=10_000)
    expected = {(f"c{c:03d}", q) for c in range(200) for q in questions(c)}
    got = [(p.chunk_id, p.question) for p in pairs]
    assert len(got) == len(set(got))
    assert set(got) == expected
    assert after.pair_count == len(expected)
    assert after.processed_chunks == 200
    assert postgres_store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATED)
