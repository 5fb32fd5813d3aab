"""The RunStore contract (`tests/contracts/run_store.py`), run against every adapter on the real
test database: the `store` fixture of this tier's conftest is each adapter in turn."""

from __future__ import annotations

from tests.contracts import include, run_leases, run_store

include(run_store, globals())
include(run_leases, globals())
