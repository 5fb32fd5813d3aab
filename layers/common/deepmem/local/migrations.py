"""Apply `supabase/bootstrap.sql` and the Supabase migrations to a plain PostgreSQL, recording
them where the Supabase CLI does (`supabase_migrations.schema_migrations`), so a later
`supabase db push` to the same database sees them as applied."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from deepmem.local.paths import repo_root

_MIGRATION_NAME = re.compile(r"^(\d{14})_(\w+)\.sql$")


def supabase_dir() -> Path:
    """`supabase/` of the checkout this package runs from (or DEEPMEM_SUPABASE_DIR)."""
    override = os.environ.get("DEEPMEM_SUPABASE_DIR")
    if override:
        return Path(override)
    return repo_root() / "supabase"


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path


def list_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or supabase_dir() / "migrations"
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"{path.name}: migrations are named <14-digit timestamp>_<name>.sql")
        found.append(Migration(match.group(1), match.group(2), path))
    return found


def apply_bootstrap(conn: psycopg.Connection, directory: Path | None = None) -> None:
    sql = ((directory or supabase_dir()) / "bootstrap.sql").read_text()
    with conn.transaction():
        conn.execute(sql)


def apply_migrations(
    conn: psycopg.Connection, directory: Path | None = None, *, upto: str | None = None
) -> list[str]:
    """Apply pending migrations in order (each in its own transaction); return their versions.
    `upto` stops after that version (to test upgrades from an older schema)."""
    with conn.transaction():
        conn.execute("create schema if not exists supabase_migrations")
        conn.execute(
            "create table if not exists supabase_migrations.schema_migrations "
            "(version text primary key, statements text[], name text)"
        )
    applied = {
        row[0] for row in conn.execute("select version from supabase_migrations.schema_migrations")
    }
    done = []
    for migration in list_migrations(directory):
        if upto is not None and migration.version > upto:
            break
        if migration.version in applied:
            continue
        sql = migration.path.read_text()
        with conn.transaction():
            conn.execute(sql)
            conn.execute(
                "insert into supabase_migrations.schema_migrations (version, statements, name) "
                "values (%s, %s, %s)",
                (migration.version, [sql], migration.name),
            )
        done.append(migration.version)
    return done
