"""The RunLeases contract (the local safety net's lease on a run): every run store adapter and
the in-memory fake. Included by the RunStore contract modules beside `run_store`."""

from __future__ import annotations

import time
from typing import Any

from deepmem.domain.status import RunStatus

DATASET = "./corpus-ds"


def _expired_ids(store: Any) -> list[Any]:
    return [run.id for run in store.expired_leases()]


def test_a_renewed_lease_is_not_expired(store: Any) -> None:
    run = store.create_run(DATASET, None)
    assert store.renew_lease(run.id, run.attempt, "me", 60.0)
    assert store.renew_lease(run.id, run.attempt, "me", 60.0), "the owner renews its own lease"
    assert _expired_ids(store) == []


def test_a_lease_left_to_expire_is_reported_with_its_run(store: Any) -> None:
    run = store.create_run(DATASET, None)
    assert store.renew_lease(run.id, run.attempt, "me", 0.05)
    time.sleep(0.1)
    expired = store.expired_leases()
    assert [(r.id, r.status, r.attempt) for r in expired] == [
        (run.id, RunStatus.GENERATING, run.attempt)
    ]


def test_a_run_without_a_lease_is_never_expired(store: Any) -> None:
    """Executions in Step Functions take no lease: the sweep never touches their runs."""
    store.create_run(DATASET, None)
    assert _expired_ids(store) == []


def test_another_owner_cannot_take_a_live_lease_but_takes_an_expired_one(store: Any) -> None:
    run = store.create_run(DATASET, None)
    assert store.renew_lease(run.id, run.attempt, "first", 60.0)
    assert not store.renew_lease(run.id, run.attempt, "second", 60.0)
    assert store.renew_lease(run.id, run.attempt, "first", 0.0), "expires at once"
    assert store.renew_lease(run.id, run.attempt, "second", 60.0), "an expired lease is free"
    assert not store.renew_lease(run.id, run.attempt, "first", 60.0)


def test_only_an_active_run_at_that_attempt_is_leased(store: Any) -> None:
    run = store.create_run(DATASET, None)
    assert not store.renew_lease(run.id, run.attempt + 1, "me", 60.0)
    failed = store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED)
    assert failed is not None
    assert not store.renew_lease(run.id, run.attempt, "me", 60.0)


def test_an_old_attempts_expired_lease_does_not_expire_the_new_attempt(store: Any) -> None:
    run = store.create_run(DATASET, None)
    assert store.renew_lease(run.id, run.attempt, "killed", 0.0)
    store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED)
    proceeded = store.transition(
        run.id, RunStatus.GENERATING_FAILED, RunStatus.GENERATING, next_attempt=True
    )
    assert proceeded is not None and proceeded.attempt == run.attempt + 1
    time.sleep(0.02)
    assert _expired_ids(store) == [], "the new attempt has no lease yet: nothing expired"
    assert not store.renew_lease(run.id, run.attempt, "killed", 60.0), "the old attempt is over"
    assert store.renew_lease(run.id, proceeded.attempt, "next", 60.0)
    assert _expired_ids(store) == []


def test_a_finished_run_is_not_expired(store: Any) -> None:
    run = store.create_run(DATASET, None)
    assert store.renew_lease(run.id, run.attempt, "me", 0.0)
    store.transition(run.id, RunStatus.GENERATING, RunStatus.GENERATING_FAILED)
    assert _expired_ids(store) == []
