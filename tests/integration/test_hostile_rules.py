"""Hostile probes of issue 15, item 4: writes that skip the SQL functions.

An admin's token through PostgREST runs as `authenticated` with the admin's claims; the same is
reproduced here in direct SQL (`set local role authenticated` and the claims, as PostgREST does
per request). Every direct write of the issue is refused; the functions still work for admins
and the service role; a catalog check stands in for Supabase's splinter lints on functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest
from deepmem.adapters.store.postgres import PostgresStore
from deepmem.domain.models import BatchRecord, ChunkQuestions

from tests.fakes.postgrest import FakePostgrest, make_token

ADMIN: dict[str, Any] = {
    "sub": "00000000-0000-0000-0000-000000000001",
    "role": "authenticated",
    "app_metadata": {"role": "admin"},
}
USER: dict[str, Any] = {
    "sub": "00000000-0000-0000-0000-000000000002",
    "role": "authenticated",
    "app_metadata": {"provider": "email"},
}
OUR_SCHEMAS = ("public", "deepmem_private")


@contextmanager
def signed_in(url: str, claims: dict[str, Any] | None) -> Iterator[psycopg.Connection]:
    """A transaction as PostgREST opens it for a request with these claims (rolled back)."""
    with psycopg.connect(url) as conn:
        conn.execute("set local role authenticated" if claims else "set local role anon")
        if claims is not None:
            conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        yield conn
        conn.rollback()


def _generating_run(store: PostgresStore) -> UUID:
    run = store.create_run("ds", None)
    store.set_total_chunks(run.id, 3, attempt=1)
    store.record_batch(
        BatchRecord(
            run_id=run.id, attempt=1, chunks=[ChunkQuestions(chunk_id="c1", questions=["q?"])]
        )
    )
    return run.id


DIRECT_WRITES = {
    "move a run generating -> completed": "update training_runs set status = 'completed'",
    "set processed_chunks to 999": "update training_runs set processed_chunks = 999",
    "insert a pair without counting it": (
        "insert into training_pairs (run_id, chunk_id, question) "
        "select id, 'c9', 'smuggled?' from training_runs"
    ),
    "open a second unfinished run": "insert into training_runs (dataset) values ('other')",
    "change lanes during a run": "update deep_memory_settings set lanes = 40",
    "delete a generating run": "delete from training_runs",
    "mark a chunk processed": (
        "insert into training_run_chunks (run_id, chunk_id, question_count) "
        "select id, 'c2', 0 from training_runs"
    ),
    "truncate the pairs": "truncate training_pairs",
}


@pytest.mark.parametrize("statement", DIRECT_WRITES.values(), ids=DIRECT_WRITES.keys())
@pytest.mark.parametrize("who", ["admin", "user"])
def test_direct_table_writes_are_refused(
    database_url: str, postgres_store: PostgresStore, statement: str, who: str
) -> None:
    run_id = _generating_run(postgres_store)
    before = postgres_store.get_run(run_id)
    with (
        signed_in(database_url, ADMIN if who == "admin" else USER) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)
    after = postgres_store.get_run(run_id)
    assert after == before
    assert [p.question for p in postgres_store.list_pairs(run_id)] == ["q?"]
    assert postgres_store.get_settings().lanes == 2
    assert postgres_store.processed_chunk_ids(run_id, ["c1", "c2"]) == {"c1"}


def test_admins_still_read_every_table(database_url: str, postgres_store: PostgresStore) -> None:
    _generating_run(postgres_store)
    with signed_in(database_url, ADMIN) as conn:
        counts = [
            conn.execute(f"select count(*) from {t}").fetchone()[0]  # type: ignore[index]
            for t in ("training_runs", "training_pairs", "deep_memory_settings")
        ]
    assert counts == [1, 1, 1]


def test_non_admins_cannot_write_through_the_functions(
    database_url: str, postgres_store: PostgresStore
) -> None:
    run_id = _generating_run(postgres_store)
    calls = [
        "select * from transition_training_run(%(id)s, array['generating'], 'generating_failed')",
        "select delete_training_run(%(id)s)",
        'select record_training_batch(%(id)s, 1, \'[{"chunk_id": "x", "questions": []}]\')',
        "select * from set_training_run_total(%(id)s, 99, 1)",
        "select * from update_deep_memory_settings('{\"lanes\": 40}')",
        "select * from deepmem_private.set_training_run_total(%(id)s, 99, 1)",
        "select * from set_training_run_plan(%(id)s, 99, 1, '{}')",
        "select * from deepmem_private.set_training_run_plan(%(id)s, 99, 1, '{}')",
    ]
    for call in calls:
        with (
            signed_in(database_url, USER) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(call, {"id": run_id})
    run = postgres_store.get_run(run_id)
    assert (run.status.value, run.total_chunks, run.processed_chunks) == ("generating", 3, 1)


def test_internal_helpers_are_not_executable_by_signed_in_users(
    database_url: str, postgres_store: PostgresStore
) -> None:
    run_id = _generating_run(postgres_store)
    helpers = [
        "select lock_training_run(%(id)s)",
        "select training_run_lock_key()",
        "select training_run_transition_allowed('generating', 'generated')",
        "select deepmem_private.require_admin()",
        "select deepmem_private.lock_worker_run(%(id)s, 1, array['generating'])",
    ]
    for helper in helpers:
        with (
            signed_in(database_url, ADMIN) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(helper, {"id": run_id})


def test_one_unfinished_run_holds_for_any_insert(
    database_url: str, postgres_store: PostgresStore
) -> None:
    """Even the database owner, past every grant and policy, cannot open a second one."""
    postgres_store.create_run("ds", None)
    with psycopg.connect(database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("insert into training_runs (dataset) values ('another dataset')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "insert into training_runs (dataset, status) values ('x', 'generating_failed')"
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # parking is the upgrade's
            conn.execute(
                "insert into training_runs (dataset, status, parked_at) "
                "values ('x', 'generating_failed', now())"
            )
        conn.execute("insert into training_runs (dataset, status) values ('old', 'completed')")
        with pytest.raises(psycopg.errors.UniqueViolation):  # nor reopen a finished one
            conn.execute("update training_runs set status = 'training' where dataset = 'old'")
        count = conn.execute("select count(*) from training_runs").fetchone()
    assert count == (2,)


def test_the_functions_work_for_an_admin_token_through_postgrest(
    fake_postgrest: FakePostgrest,
) -> None:
    def rpc(token: str, function: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{fake_postgrest.url}/rest/v1/rpc/{function}",
            json=body,
            headers={"apikey": make_token("anon"), "Authorization": f"Bearer {token}"},
        )

    admin = make_token("authenticated", sub=ADMIN["sub"], app_metadata={"role": "admin"})
    user = make_token("authenticated", sub=USER["sub"], app_metadata={"provider": "email"})
    run_id = str(uuid4())
    refused = rpc(user, "create_training_run", {"p_dataset": "ds", "p_run_id": run_id})
    assert refused.status_code == 403 and refused.json()["code"] == "42501"
    created = rpc(admin, "create_training_run", {"p_dataset": "ds", "p_run_id": run_id})
    assert created.status_code == 200 and created.json()["created"] is True
    listed = rpc(admin, "list_training_runs", {})
    assert [r["id"] for r in listed.json()] == [run_id]
    assert rpc(user, "list_training_runs", {}).json() == []  # row-level security
    anon = rpc(make_token("anon"), "list_training_runs", {})
    assert anon.status_code == 401


def _catalog(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, {"schemas": list(OUR_SCHEMAS)}).fetchall()


# Our own catalog queries for what Supabase's splinter lints check on functions.
_OUR_FUNCTIONS = """
    select p.oid, n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid)
           || ')' as name, p.prosecdef, coalesce(p.proconfig, '{}') as config
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = any(%(schemas)s)
       and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')
"""


def test_no_function_has_a_mutable_search_path(database_url: str) -> None:
    """Lint `function_search_path_mutable`: a function that does not pin `search_path`."""
    mutable = _catalog(
        database_url,
        f"select name from ({_OUR_FUNCTIONS}) f "
        "where not exists (select 1 from unnest(f.config) c where c like 'search_path=%%')",
    )
    assert len(_catalog(database_url, _OUR_FUNCTIONS)) > 20
    assert mutable == []


def test_no_security_definer_function_is_exposed(database_url: str) -> None:
    """A security definer function in a schema PostgREST exposes (`public`) runs with its
    owner's rights for anyone who may execute it: there is none, and none in any schema that
    `anon` may execute."""
    exposed = _catalog(
        database_url,
        f"select name from ({_OUR_FUNCTIONS}) f where f.prosecdef and f.name like 'public.%%'",
    )
    anon = _catalog(
        database_url,
        f"select name from ({_OUR_FUNCTIONS}) f "
        "where has_function_privilege('anon', f.oid, 'execute')",
    )
    assert exposed == [] and anon == []
    definers = _catalog(database_url, f"select name from ({_OUR_FUNCTIONS}) f where f.prosecdef")
    assert len(definers) >= 8


def test_no_table_is_writable_by_anon_or_signed_in_users(database_url: str) -> None:
    writable = _catalog(
        database_url,
        """
        select r.rolname, c.relname, priv
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         cross join (values ('anon'), ('authenticated')) r(rolname)
         cross join unnest(array['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) priv
         where n.nspname = any(%(schemas)s) and c.relkind in ('r', 'p')
           and has_table_privilege(r.rolname, c.oid, priv)
        """,
    )
    assert writable == []
