"""Fixtures on real parts: the test PostgreSQL and stores on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from deepmem.adapters.store.postgres import PostgresStore, connect_pool
from deepmem.adapters.store.supabase import SupabaseStore, connect_supabase

from tests.db import TestServer, test_server
from tests.fakes.postgrest import FakePostgrest, make_token


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


@pytest.fixture
def fake_postgrest(database_url: str) -> Iterator[FakePostgrest]:
    """PostgREST's RPC endpoint on loopback, over the per-test database."""
    with FakePostgrest(database_url) as api:
        yield api


@pytest.fixture
def supabase_store(fake_postgrest: FakePostgrest) -> Iterator[SupabaseStore]:
    store = SupabaseStore(connect_supabase(fake_postgrest.url, make_token("service_role")))
    yield store
    store.close()


STORE_KINDS = ["postgres", "supabase"]


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> PostgresStore | SupabaseStore:
    """Every RunStore adapter, for the contract suite."""
    return request.getfixturevalue(f"{request.param}_store")
