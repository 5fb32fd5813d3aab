"""The schema as it upgrades in place, and row-level security as Supabase applies it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from deepmem.local.migrations import apply_bootstrap, apply_migrations, list_migrations

from tests.db import TestServer


@pytest.fixture
def empty_database(pg_server: TestServer) -> Iterator[str]:
    name = "upgrade_test"
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


def test_migrations_follow_the_supabase_cli_naming() -> None:
    migrations = list_migrations()
    assert len(migrations) >= 3
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    assert all(len(m.version) == 14 for m in migrations)


def test_legacy_failed_runs_upgrade_to_phase_specific_statuses(empty_database: str) -> None:
    first = list_migrations()[0].version
    with psycopg.connect(empty_database, autocommit=True) as conn:
        apply_bootstrap(conn)
        assert apply_migrations(conn, upto=first) == [first]
        conn.execute(
            "insert into training_runs (dataset, status, deeplake_job_id, error_message) values "
            "('a', 'failed', 'job-1', 'training broke'), ('b', 'failed', null, 'llm broke'), "
            "('c', 'completed', 'job-0', null), ('d', 'failed', null, null)"
        )
        applied = apply_migrations(conn)
        assert applied == [m.version for m in list_migrations()[1:]]
        rows: dict[str, str] = dict(
            conn.execute("select dataset, status from training_runs").fetchall()
        )
        assert rows == {
            "a": "training_failed",
            "b": "generating_failed",
            "c": "completed",
            "d": "generating_failed",
        }
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("insert into training_runs (dataset, status) values ('e', 'failed')")
        assert apply_migrations(conn) == []  # idempotent


def _visible(url: str, role: str, claims: dict[str, Any] | None) -> tuple[int, int, int]:
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(f"set local role {role}")
        if claims is not None:
            conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        counts = []
        for table in ("training_runs", "training_pairs", "deep_memory_settings"):
            try:
                row = conn.execute(f"select count(*) from {table}").fetchone()
                counts.append(row[0] if row else 0)
            except psycopg.errors.InsufficientPrivilege:
                return (-1, -1, -1)
        return (counts[0], counts[1], counts[2])


def test_row_level_security(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("select create_training_run('ds', null)")
        run_id = conn.execute("select id from training_runs").fetchone()[0]  # type: ignore[index]
        conn.execute(
            "select record_training_batch(%s, 1, %s::jsonb)",
            (run_id, json.dumps([{"chunk_id": "c1", "questions": ["q?"]}])),
        )
    admin = {
        "sub": "00000000-0000-0000-0000-000000000001",
        "role": "authenticated",
        "app_metadata": {"role": "admin"},
    }
    user = {
        "sub": "00000000-0000-0000-0000-000000000002",
        "role": "authenticated",
        "app_metadata": {"provider": "email"},
    }
    assert _visible(database_url, "authenticated", admin) == (1, 1, 1)
    assert _visible(database_url, "authenticated", user) == (0, 0, 0)
    assert _visible(database_url, "authenticated", None) == (0, 0, 0)
    assert _visible(database_url, "anon", None) == (-1, -1, -1)
    assert _visible(database_url, "service_role", None) == (1, 1, 1)


def test_non_admin_cannot_create_runs_through_the_functions(database_url: str) -> None:
    user = {"sub": "00000000-0000-0000-0000-000000000002", "role": "authenticated"}
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute("set local role authenticated")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(user),))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select create_training_run('ds', null)")


def test_anon_cannot_call_the_functions(database_url: str) -> None:
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute("set local role anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from list_training_runs()")


def test_runs_are_published_for_realtime(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "select tablename from pg_publication_tables where pubname = 'supabase_realtime'"
            )
        }
    assert "training_runs" in tables


def _seed_first_product(conn: psycopg.Connection) -> dict[str, str]:
    """What the first schema accepted and the invariants migration once failed on: several
    failed runs of one dataset, several datasets with unfinished runs, a pair stored twice,
    settings out of range. Returns run id -> dataset."""
    rows = conn.execute(
        "insert into training_runs (dataset, status, deeplake_job_id, error_message, "
        "total_chunks, processed_chunks, pair_count, created_at) values "
        "('d', 'failed', null, 'llm broke', 4, 2, 3, now() - interval '5 days'), "
        "('d', 'failed', 'job-1', 'training broke', 2, 2, 2, now() - interval '4 days'), "
        "('e', 'generating', null, null, 3, 1, 1, now() - interval '3 days'), "
        "('f', 'generated', null, null, 1, 1, 1, now() - interval '2 days'), "
        "('g', 'training', 'job-2', null, 1, 1, 0, now() - interval '1 day'), "
        "('d', 'completed', 'job-0', null, 1, 1, 1, now() - interval '9 days'), "
        "('h', 'failed', null, 'newest', 5, 0, 0, now()) "
        "returning id, dataset, status"
    ).fetchall()
    ids = {str(r[0]): f"{r[1]}/{r[2]}" for r in rows}
    by = {v: k for k, v in ids.items()}
    first_d = conn.execute(
        "select id from training_runs where dataset = 'd' and status = 'failed' "
        "order by created_at limit 1"
    ).fetchone()[0]  # type: ignore[index]
    conn.execute(
        "insert into training_pairs (run_id, chunk_id, question) values "
        "(%(d)s, 'c1', 'q1?'), (%(d)s, 'c1', 'q1?'), (%(d)s, 'c2', 'q2?'), "
        "(%(e)s, 'c1', 'qe?'), (%(f)s, 'c1', 'qf?'), (%(done)s, 'c1', 'qd?')",
        {"d": first_d, "e": by["e/generating"], "f": by["f/generated"], "done": by["d/completed"]},
    )
    conn.execute("update deep_memory_settings set questions_per_chunk = 50, batch_size = 0")
    return ids


def test_the_upgrade_applies_over_any_data_the_first_schema_accepted(empty_database: str) -> None:
    first = list_migrations()[0].version
    with psycopg.connect(empty_database, autocommit=True) as conn:
        apply_bootstrap(conn)
        apply_migrations(conn, upto=first)
        seeded = _seed_first_product(conn)
        applied = apply_migrations(conn)
        assert applied == [m.version for m in list_migrations()[1:]]
        runs = {
            str(r[0]): r[1:]
            for r in conn.execute(
                "select id, dataset, status, parked_at is not null, error_message, pair_count, "
                "processed_chunks from training_runs"
            ).fetchall()
        }
        pairs = conn.execute("select count(*) from training_pairs").fetchone()
        settings = conn.execute(
            "select questions_per_chunk, batch_size from deep_memory_settings"
        ).fetchone()
    assert set(runs) == set(seeded)  # no run lost
    assert pairs == (5,)  # every pair kept; the one stored twice, once
    assert settings == (10, 1)
    unfinished = {k: v for k, v in runs.items() if v[1] != "completed"}
    live = [k for k, v in unfinished.items() if not v[2]]
    assert [runs[k][0] for k in live] == ["h"]  # the newest unfinished run is left as it was
    assert runs[live[0]][1:3] == ("generating_failed", False)
    parked = {runs[k][0] + "/" + runs[k][1] for k, v in unfinished.items() if v[2]}
    assert parked == {
        "d/generating_failed",
        "d/training_failed",
        "e/generating_failed",  # was generating: nothing can be running it any more
        "f/generated",
        "g/training_failed",
    }
    for run_id, row in unfinished.items():
        if row[2]:
            assert row[3].startswith("parked by the upgrade: 6 runs were unfinished")
            assert f"DELETE /runs/{run_id}" in row[3]
    old_d = next(v for v in runs.values() if v[0] == "d" and v[1] == "generating_failed")
    assert old_d[3].endswith("Its error before: llm broke")
    assert (old_d[4], old_d[5]) == (2, 2)  # pairs counted, their chunks marked processed


def test_parked_runs_can_be_deleted_and_proceeded_once_alone(empty_database: str) -> None:
    from deepmem.adapters.store.postgres import PostgresStore, connect_pool
    from deepmem.domain.errors import BlockingRunExistsError
    from deepmem.domain.status import RunStatus

    first = list_migrations()[0].version
    with psycopg.connect(empty_database, autocommit=True) as conn:
        apply_bootstrap(conn)
        apply_migrations(conn, upto=first)
        _seed_first_product(conn)
        apply_migrations(conn)
    store = PostgresStore(connect_pool(empty_database, max_size=2))
    try:
        runs = [r for r in store.list_runs() if r.status is not RunStatus.COMPLETED]
        newest, oldest = runs[0], runs[-1]
        with pytest.raises(BlockingRunExistsError):
            store.create_run("new", None)
        with pytest.raises(BlockingRunExistsError) as caught:  # not while others are unfinished
            store.transition(
                oldest.id, RunStatus.GENERATING_FAILED, RunStatus.GENERATING, next_attempt=True
            )
        assert caught.value.blocking_run_id != str(oldest.id)
        for run in runs[1:-1]:
            assert store.delete_run(run.id).training_run_id == run.id
        with pytest.raises(BlockingRunExistsError):
            store.transition(
                oldest.id, RunStatus.GENERATING_FAILED, RunStatus.GENERATING, next_attempt=True
            )
        store.delete_run(newest.id)
        moved = store.transition(
            oldest.id, RunStatus.GENERATING_FAILED, RunStatus.GENERATING, next_attempt=True
        )
        assert moved is not None and moved.attempt == 2 and moved.error_message is None
        assert store.processed_chunk_ids(oldest.id, ["c1", "c2", "c3"]) == {"c1", "c2"}
        with pytest.raises(BlockingRunExistsError):
            store.create_run("new", None)
    finally:
        store.close()
