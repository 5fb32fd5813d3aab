"""A local execution's lease on its run, renewed while the execution runs (the local safety
net; `supabase/migrations/20241204000000_local_run_lease.sql`). A killed process stops renewing,
and the next deepmem command fails the run (`RunService.fail_lost_local_runs`)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from uuid import UUID

from deepmem.ports import RunLeases

_log = logging.getLogger(__name__)


def process_owner() -> str:
    """Who holds a lease: this machine, this process, and a nonce (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseKeeper:
    """Takes and renews one owner's leases; renewal every third of the lease's length."""

    def __init__(self, leases: RunLeases, ttl_seconds: float, owner: str | None = None) -> None:
        if ttl_seconds <= 0:
            raise ValueError("a lease lasts more than 0 s")
        self.leases = leases
        self.ttl_seconds = ttl_seconds
        self.owner = owner or process_owner()
        self._due: dict[tuple[UUID, int], float] = {}
        self._lock = threading.Lock()

    def renew(self, run_id: UUID, attempt: int) -> bool:
        """Renew now; False when the run is no longer active at that attempt (or the store
        could not be reached: the next beat tries again)."""
        with self._lock:
            self._due[(run_id, attempt)] = time.monotonic() + self.ttl_seconds / 3
        try:
            return self.leases.renew_lease(run_id, attempt, self.owner, self.ttl_seconds)
        except Exception:  # a missed beat is not fatal while the lease lasts
            _log.warning("renewing the lease of run %s failed", run_id, exc_info=True)
            return False

    def renew_if_due(self, run_id: UUID, attempt: int) -> None:
        with self._lock:
            due = self._due.get((run_id, attempt), 0.0)
        if time.monotonic() >= due:
            self.renew(run_id, attempt)

    def forget(self, run_id: UUID, attempt: int) -> None:
        with self._lock:
            self._due.pop((run_id, attempt), None)
