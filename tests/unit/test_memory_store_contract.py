"""The RunStore contract suite, run against the in-memory fake the unit tests rely on: a fake
that drifts from the database would make every unit test above it lie."""

from __future__ import annotations

import pytest

from tests.fakes.memory_store import MemoryRunStore
from tests.integration import test_store_contract as contract

for _name in dir(contract):
    if _name.startswith("test_"):
        globals()[_name] = getattr(contract, _name)


@pytest.fixture
def store() -> MemoryRunStore:
    return MemoryRunStore()
