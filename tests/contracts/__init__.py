"""Contract suites: one set of tests every implementation of a port must pass. A tier runs a
suite by importing its tests into a module of its own and giving it the implementation as a
fixture (see `include`)."""

from __future__ import annotations

from types import ModuleType
from typing import Any


def include(suite: ModuleType, namespace: dict[str, Any]) -> None:
    """Put every `test_*` of `suite` into `namespace` (a test module's globals)."""
    for name in dir(suite):
        if name.startswith("test_"):
            namespace[name] = getattr(suite, name)
