"""The CLI's one shutdown path: SIGTERM and SIGHUP unwind `with` blocks like an exception, and
the lease keeper renews on its own schedule."""

from __future__ import annotations

import os
import signal
import time
from uuid import uuid4

import pytest
from deepmem.cli.runtime import TerminatedError, exit_on_signals
from deepmem.local.lease import LeaseKeeper

from tests.fakes.memory_store import MemoryRunStore


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_unwinds_the_block_with_exit_code_128_plus_it(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    unwound = []
    with pytest.raises(TerminatedError) as caught, exit_on_signals():
        try:
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler raises here, in the main thread
        finally:
            unwound.append(True)
    assert caught.value.code == 128 + sig
    assert unwound == [True]
    assert signal.getsignal(sig) is before, "the previous handler is restored"


def test_a_second_signal_does_not_break_the_shutdown_the_first_began() -> None:
    finished = []
    with pytest.raises(TerminatedError), exit_on_signals():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # during the cleanup
            time.sleep(0.05)
            finished.append(True)
    assert finished == [True]


def test_the_keeper_renews_a_third_of_the_way_through_the_lease() -> None:
    store = MemoryRunStore()
    run = store.create_run("/data/kb", None)
    calls = []

    class Counting:
        def renew_lease(self, run_id, attempt, owner, ttl_seconds):
            calls.append((run_id, attempt, owner, ttl_seconds))
            return store.renew_lease(run_id, attempt, owner, ttl_seconds)

        def expired_leases(self):
            return store.expired_leases()

    keeper = LeaseKeeper(Counting(), ttl_seconds=0.3)
    assert keeper.renew(run.id, run.attempt)
    keeper.renew_if_due(run.id, run.attempt)
    assert len(calls) == 1, "not due yet"
    time.sleep(0.12)
    keeper.renew_if_due(run.id, run.attempt)
    assert len(calls) == 2
    assert {owner for _, _, owner, _ in calls} == {keeper.owner}
    assert store.expired_leases() == []


def test_a_failed_renewal_is_not_raised() -> None:
    class Down:
        def renew_lease(self, *args: object) -> bool:
            raise ConnectionError("the database is down")

        def expired_leases(self) -> list[object]:
            return []

    keeper = LeaseKeeper(Down(), ttl_seconds=1.0)  # type: ignore[arg-type]
    assert keeper.renew(uuid4(), 1) is False
