"""Pair reads by keyset on the real database: a page at the end of a run touches as many rows
as a page at its start. Counted by PostgreSQL itself (the transaction's table statistics,
`pg_stat_xact_user_tables`), not timed: the count is the cost that grows with an offset."""

from __future__ import annotations

from uuid import UUID

import psycopg
from deepmem.adapters.store.postgres import PostgresStore
from deepmem.services.training import TrainingService

PAIRS = 20_000
PAGE = 500


def _insert_pairs(url: str, run_id: UUID, count: int, first: int = 1) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into public.training_pairs (run_id, chunk_id, question)"
            " select %s, 'c' || g, 'question ' || g || '?'"
            " from generate_series(%s::int, %s::int) g",
            (run_id, first, first + count - 1),
        )
        conn.execute("analyze public.training_pairs")


def _rows_touched(url: str, sql: str, params: tuple[object, ...]) -> tuple[int, int]:
    """(rows read, rows returned) by one call, as the transaction's statistics count them:
    tuples fetched through an index plus tuples read by sequential scans of the pairs."""
    with psycopg.connect(url) as conn:
        returned = len(conn.execute(sql, params).fetchall())
        stats = conn.execute(
            "select coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)"
            " from pg_stat_xact_user_tables where relname = 'training_pairs'"
        ).fetchone()
        conn.rollback()
    assert stats is not None
    return int(stats[0]), returned


def _id_at(url: str, run_id: UUID, position: int) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select id from public.training_pairs where run_id = %s order by id offset %s limit 1",
            (run_id, position),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_keyset_page_at_the_end_reads_no_more_rows_than_at_the_start(
    postgres_store: PostgresStore, database_url: str
) -> None:
    run = postgres_store.create_run("ds", None)
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "insert into public.training_runs (dataset, status) values ('old', 'completed')"
            " returning id"
        ).fetchone()
    assert row is not None
    for half in range(2):  # another run's pairs interleave with this run's in the table
        _insert_pairs(database_url, row[0], PAIRS // 2, first=1 + half * PAIRS)
        _insert_pairs(database_url, run.id, PAIRS // 2, first=1 + half * PAIRS)
    keyset = "select * from public.list_training_pairs_after(%s, %s, %s)"

    start_read, start_returned = _rows_touched(database_url, keyset, (run.id, 0, PAGE))
    end_after = _id_at(database_url, run.id, PAIRS - PAGE - 1)
    end_read, end_returned = _rows_touched(database_url, keyset, (run.id, end_after, PAGE))

    assert start_returned == end_returned == PAGE
    assert start_read <= PAGE + 1
    assert end_read <= PAGE + 1
    # The measure sees what OFFSET costs: the same last page through it reads the whole run.
    offset_read, _ = _rows_touched(
        database_url,
        "select * from public.list_training_pairs(%s, %s, %s)",
        (run.id, PAGE, PAIRS - PAGE),
    )
    assert offset_read >= PAIRS - PAGE


def test_the_training_service_reads_every_pair_once_in_order(
    postgres_store: PostgresStore, database_url: str
) -> None:
    run = postgres_store.create_run("ds", None)
    _insert_pairs(database_url, run.id, 2_345)
    service = TrainingService(postgres_store, lambda *_: None)  # type: ignore[arg-type]
    pages = list(service.pair_pages(run.id, page_size=1000))
    assert [len(p) for p in pages] == [1000, 1000, 345]
    ids = [p.id for page in pages for p in page]
    assert ids == sorted(ids) and len(set(ids)) == 2_345
