"""The RunStore contract suite, run against the in-memory fake the unit tests rely on: a fake
that drifts from the database would make every unit test above it lie."""

from __future__ import annotations

import pytest

from tests.contracts import include, run_leases, run_store
from tests.fakes.memory_store import MemoryRunStore

include(run_store, globals())
include(run_leases, globals())


@pytest.fixture
def store() -> MemoryRunStore:
    return MemoryRunStore()
