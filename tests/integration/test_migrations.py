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
