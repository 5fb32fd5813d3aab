"""The artifact tier checks what `sam build` produced (`.aws-sam/build`), run as Lambda runs it.
`.ci/run` builds it (`./scripts/lint.sh`) before the tests; elsewhere the tier is skipped until
a build exists."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api_support import SigningKeys
from tests.db import TestServer, test_server
from tests.deployed_support import BUILD, ROOT, runtime_sdk


@pytest.fixture(autouse=True, scope="session")
def _built() -> None:
    if not BUILD.is_dir():
        pytest.skip(f"no {BUILD.relative_to(ROOT)}: run ./scripts/lint.sh (sam build) first")


@pytest.fixture(scope="session")
def sdk(_built: None) -> Iterator[Path]:
    """boto3 of the Lambda runtime's version (installed once under .aws-sam/runtime-sdk)."""
    yield runtime_sdk()


@pytest.fixture(scope="session")
def pg_server(_built: None) -> Iterator[TestServer]:
    """The embedded PostgreSQL behind the loopback Supabase endpoint."""
    with test_server() as server:
        yield server


@pytest.fixture(scope="session")
def keys() -> SigningKeys:
    """The keys the loopback JWKS publishes (the authorizer verifies tokens against them)."""
    return SigningKeys.generate()
