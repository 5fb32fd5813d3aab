"""Fixtures on real parts: the test PostgreSQL and stores on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from deepmem.adapters.postgres import PostgresStore, connect_pool

from tests.db import TestServer, test_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TestServer]:
    with test_server() as server:
        yield server


@pytest.fixture
def database_url(pg_server: TestServer) -> Iterator[str]:
    """A fresh database with the whole schema, cloned from the template."""
    name, url = pg_server.fresh_database()
    yield url
    pg_server.drop_database(name)


@pytest.fixture
def postgres_store(database_url: str) -> Iterator[PostgresStore]:
    pool = connect_pool(database_url, max_size=40)
    store = PostgresStore(pool)
    yield store
    store.close()


STORE_KINDS = ["postgres"]


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> PostgresStore:
    """Every RunStore adapter, for the contract suite."""
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]
