"""The Supabase CLI (npm `supabase`, pinned in package.json, installed by `npm ci`) applies our
migrations to a plain, bootstrapped PostgreSQL, as `supabase db push` would to a real project.

Without Docker the CLI still talks to any database given by `--db-url`. Under CI (CI=true) a
missing CLI is a failure; elsewhere the test skips and says how to install it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from deepmem.local.migrations import apply_bootstrap, list_migrations

from tests.db import TestServer

ROOT = Path(__file__).resolve().parents[2]


def _cli() -> str:
    local = ROOT / "node_modules" / ".bin" / "supabase"
    found = str(local) if local.exists() else shutil.which("supabase")
    if found:
        return found
    message = "the Supabase CLI is not installed: run `npm ci` at the repository root"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def _supabase(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_cli(), *args, "--workdir", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "DO_NOT_TRACK": "1"},
    )


def _no_tls(url: str) -> str:
    # The CLI tries TLS first; a local test server has none.
    return url + ("&" if "?" in url else "?") + "sslmode=disable"


@pytest.fixture
def bootstrapped_url(pg_server: TestServer) -> Iterator[str]:
    """A database with only what a Supabase project already has (bootstrap.sql)."""
    name = f"cli_{os.getpid()}"
    url = pg_server.create_database(name)
    with psycopg.connect(url, autocommit=True) as conn:
        apply_bootstrap(conn)
    yield url
    pg_server.drop_database(name)


def test_db_push_applies_every_migration_and_migration_list_shows_them(
    bootstrapped_url: str,
) -> None:
    versions = [m.version for m in list_migrations()]
    pushed = _supabase("db", "push", "--db-url", _no_tls(bootstrapped_url), "--yes")
    assert pushed.returncode == 0, pushed.stderr + pushed.stdout
    for migration in list_migrations():
        assert f"Applying migration {migration.path.name}" in pushed.stderr

    with psycopg.connect(bootstrapped_url) as conn:
        recorded = conn.execute(
            "select version from supabase_migrations.schema_migrations order by version"
        ).fetchall()
        assert [v for (v,) in recorded] == versions
        # The last migration's functions exist, so its body really ran.
        found = conn.execute(
            "select to_regprocedure('public.delete_training_run(uuid)') is not null"
        ).fetchone()
        assert found == (True,)

    listed = _supabase("migration", "list", "--db-url", _no_tls(bootstrapped_url))
    assert listed.returncode == 0, listed.stderr + listed.stdout
    rows = [line for line in listed.stdout.splitlines() if "|" in line]
    for version in versions:
        # Local | Remote | Time: applied means the version is in both columns.
        assert any(line.count(version) >= 2 for line in rows), listed.stdout

    again = _supabase("db", "push", "--db-url", _no_tls(bootstrapped_url), "--yes")
    assert again.returncode == 0, again.stderr + again.stdout
    assert "Applying migration" not in again.stderr


def test_the_cli_sees_our_own_migrator_s_databases_as_up_to_date(database_url: str) -> None:
    """The test template was migrated by deepmem's own migrator: it records versions where the
    CLI looks, so a later `supabase db push` to such a database applies nothing twice."""
    pushed = _supabase("db", "push", "--db-url", _no_tls(database_url), "--yes")
    assert pushed.returncode == 0, pushed.stderr + pushed.stdout
    assert "Applying migration" not in pushed.stderr
