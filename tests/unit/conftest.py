"""The unit tier reaches no network: every connection that is not to loopback is refused, and
a test that tried one fails even if it caught the refusal."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.network_guard import loopback_only


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    with loopback_only() as refused:
        yield
    assert refused == [], f"a unit test tried to reach the network: {refused}"
