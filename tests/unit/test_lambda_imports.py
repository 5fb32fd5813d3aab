"""What the Lambda functions import: never the local room, the CLI, moto or unittest.mock
(none of them ships in a layer), and for the API functions no heavy dependency either."""

from __future__ import annotations

import json

import pytest

from tests.api_support import ROOT
from tests.subprocess_support import run_python

API_FUNCTIONS = ("runs", "proceed", "delete", "settings", "authorizer", "dashboard")
TASK_FUNCTIONS = ("generate_batch", "train", "record_failure")
LOCAL_ONLY = ("deepmem.local", "deepmem.cli", "moto", "unittest.mock")

PROBE = """
import importlib.util, json, sys
path = {root!r} + "/functions/{name}/app.py"
spec = importlib.util.spec_from_file_location("fn_{name}", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
assert callable(module.handler)
print(json.dumps(sorted(sys.modules)))
"""


def imported_by(name: str) -> set[str]:
    result = run_python(PROBE.format(root=str(ROOT), name=name))
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def reaches(modules: set[str], prefix: str) -> bool:
    return any(m == prefix or m.startswith(prefix + ".") for m in modules)


@pytest.mark.parametrize("name", API_FUNCTIONS + TASK_FUNCTIONS)
def test_a_function_imports_nothing_that_stays_on_one_machine(name: str) -> None:
    modules = imported_by(name)

    assert "deepmem" in modules  # the probe did load the package
    assert [p for p in LOCAL_ONLY if reaches(modules, p)] == []
