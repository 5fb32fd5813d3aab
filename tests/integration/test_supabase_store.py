"""SupabaseStore beyond the contract suite: what it sends to PostgREST, RLS through the JWT's
role and claims, and failures of the network or of the key."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from deepmem.adapters.store.supabase import SupabaseStore, connect_supabase
from deepmem.domain.errors import RunNotFoundError, StoreError
from deepmem.domain.models import BatchRecord, ChunkQuestions, Settings
from deepmem.domain.status import RunStatus

from tests.fakes.postgrest import FakePostgrest, make_token

SERVICE_KEY = make_token("service_role")


def _store(api: FakePostgrest, token: str, **timeouts: float) -> SupabaseStore:
    return SupabaseStore(connect_supabase(api.url, token, **timeouts))


@pytest.fixture
def service(fake_postgrest: FakePostgrest) -> Iterator[SupabaseStore]:
    store = _store(fake_postgrest, SERVICE_KEY)
    yield store
    store.close()


RUN = uuid4()
# (operation, the SQL function it must call, the exact argument names it must send)
CALLS: list[tuple[Callable[[SupabaseStore], Any], str, set[str]]] = [
    (
        lambda s: s.create_run("ds", uuid4(), RUN),
        "create_training_run",
        {"p_dataset", "p_user_id", "p_run_id"},
    ),
    (lambda s: s.get_run(RUN), "get_training_run", {"p_run_id"}),
    (lambda s: s.list_runs(10, 0), "list_training_runs", {"p_limit", "p_offset"}),
    (lambda s: s.find_blocking_run(), "blocking_training_run", set()),
    (
        lambda s: s.set_total_chunks(RUN, 2, attempt=1),
        "set_training_run_plan",
        {"p_run_id", "p_total_chunks", "p_attempt", "p_estimate"},
    ),
    (
        lambda s: s.record_batch(
            BatchRecord(
                run_id=RUN, attempt=1, chunks=[ChunkQuestions(chunk_id="c1", questions=["q?"])]
            )
        ),
        "record_training_batch",
        {"p_run_id", "p_attempt", "p_chunks", "p_llm_calls", "p_tokens_used", "p_look_up"},
    ),
    (
        lambda s: s.processed_chunk_ids(RUN, ["c1", "c2"]),
        "processed_training_chunks",
        {"p_run_id", "p_chunk_ids"},
    ),
    (
        lambda s: s.list_pairs(RUN, 5, 0),
        "list_training_pairs",
        {"p_run_id", "p_limit", "p_offset"},
    ),
    (
        lambda s: s.transition(RUN, RunStatus.GENERATING, RunStatus.GENERATING_FAILED),
        "transition_training_run",
        {"p_run_id", "p_expected", "p_target", "p_error_message", "p_next_attempt", "p_attempt"},
    ),
    (lambda s: s.delete_run(RUN), "delete_training_run", {"p_run_id"}),
    (lambda s: s.get_settings(), "get_deep_memory_settings", set()),
    (lambda s: s.update_settings(Settings()), "update_deep_memory_settings", {"p_settings"}),
]


def test_every_operation_is_one_rpc_post_with_the_declared_arguments(
    fake_postgrest: FakePostgrest, service: SupabaseStore
) -> None:
    for operation, function, names in CALLS:
        before = len(fake_postgrest.requests)
        operation(service)
        sent = fake_postgrest.requests[before:]
        assert len(sent) == 1, function
        request = sent[0]
        assert request.method == "POST"
        assert request.path == f"/rest/v1/rpc/{function}"
        assert set(request.body) == names, function
        assert request.headers["apikey"] == SERVICE_KEY
        assert request.headers["authorization"] == f"Bearer {SERVICE_KEY}"
        assert request.headers["content-type"].startswith("application/json")


def test_arguments_keep_their_json_types(
    fake_postgrest: FakePostgrest, service: SupabaseStore
) -> None:
    run = service.create_run("ds", None)
    service.record_batch(
        BatchRecord(
            run_id=run.id, attempt=1, chunks=[ChunkQuestions(chunk_id="c1", questions=["a?", "b?"])]
        )
    )
    service.transition(run.id, [RunStatus.GENERATING], RunStatus.GENERATING_FAILED)
    bodies = {r.path.rsplit("/", 1)[1]: r.body for r in fake_postgrest.requests}
    assert bodies["create_training_run"] == {
        "p_dataset": "ds",
        "p_user_id": None,
        "p_run_id": None,
    }
    assert bodies["record_training_batch"]["p_chunks"] == [
        {"chunk_id": "c1", "questions": ["a?", "b?"]}
    ]
    assert bodies["transition_training_run"]["p_expected"] == ["generating"]
    assert bodies["transition_training_run"]["p_next_attempt"] is False


def test_rls_admin_token_sees_rows_other_tokens_do_not(
    fake_postgrest: FakePostgrest, service: SupabaseStore
) -> None:
    run = service.create_run("ds", None)
    admin = _store(
        fake_postgrest,
        make_token("authenticated", sub=str(uuid4()), app_metadata={"role": "admin"}),
    )
    user = _store(fake_postgrest, make_token("authenticated", sub=str(uuid4())))
    anon = _store(fake_postgrest, make_token("anon"))
    try:
        assert [r.id for r in admin.list_runs()] == [run.id]
        assert admin.get_run(run.id) == run
        assert user.list_runs() == []
        with pytest.raises(RunNotFoundError):
            user.get_run(run.id)
        # Writing under RLS is refused by the policy, not silently dropped.
        service.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED)
        with pytest.raises(StoreError):
            user.create_run("ds-2", None)
        # anon may not even execute the functions.
        with pytest.raises(StoreError):
            anon.list_runs()
    finally:
        for store in (admin, user, anon):
            store.close()


def test_a_token_signed_with_another_secret_is_refused(fake_postgrest: FakePostgrest) -> None:
    forged = _store(fake_postgrest, make_token("service_role", secret="x" * 40))
    try:
        with pytest.raises(StoreError, match="PGRST301"):
            forged.list_runs()
    finally:
        forged.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_endpoint_down_is_a_store_error_not_a_hang() -> None:
    store = SupabaseStore(
        connect_supabase(f"http://127.0.0.1:{_free_port()}", SERVICE_KEY, connect_timeout=1.0)
    )
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        store.get_run(uuid4())
    assert time.monotonic() - started < 5
    assert isinstance(caught.value.__cause__, httpx.HTTPError)


def test_endpoint_that_never_answers_times_out_as_store_error() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    store = SupabaseStore(connect_supabase(f"http://127.0.0.1:{port}", SERVICE_KEY, timeout=0.5))
    started = time.monotonic()
    try:
        with pytest.raises(StoreError) as caught:
            store.create_run("ds", None)
        assert time.monotonic() - started < 5
        assert isinstance(caught.value.__cause__, httpx.TimeoutException)
    finally:
        store.close()
        for conn in accepted:
            conn.close()
        listener.close()


def test_a_bad_url_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        connect_supabase("not a url", SERVICE_KEY)


@pytest.mark.parametrize(
    "path",
    [
        "/rest/v1/rpc/get_training_run;drop table training_runs",
        "/rest/v1/rpc/pg_sleep",
        "/rest/v1/rpc/no_such_function",
    ],
)
def test_the_endpoint_only_calls_known_public_functions(
    fake_postgrest: FakePostgrest, path: str
) -> None:
    response = httpx.post(
        fake_postgrest.url + path,
        json={"p_run_id": str(UUID(int=0))},
        headers={"apikey": SERVICE_KEY, "Authorization": f"Bearer {SERVICE_KEY}"},
    )
    assert response.status_code == 404
    assert response.json()["code"] in ("PGRST125", "PGRST202")
