"""API functions cold-start without the heavy layer: no DeepLake, OpenAI or numpy imported."""

from __future__ import annotations

import json

from tests.api_support import ROOT
from tests.subprocess_support import run_python

HEAVY = ("deeplake", "openai", "numpy", "onnxruntime", "tokenizers")
FUNCTIONS = ("runs", "proceed", "delete", "settings", "authorizer", "dashboard")

PROBE = """
import importlib.util, json, sys
for name in {functions!r}:
    path = {root!r} + f"/functions/{{name}}/app.py"
    spec = importlib.util.spec_from_file_location(f"fn_{{name}}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.handler)
import deepmem.local.api_server  # the local server too
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})))
"""


def test_api_functions_import_no_heavy_module() -> None:
    code = PROBE.format(functions=FUNCTIONS, root=str(ROOT), heavy=HEAVY)

    result = run_python(code)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
