"""The committed openapi.json is what the code generates; regenerate with scripts/openapi.py."""

from __future__ import annotations

import importlib.util
import json

from tests.api_support import ROOT

P = "/v1/api/deep-memory"


def generated_spec() -> str:
    spec = importlib.util.spec_from_file_location(
        "deepmem_openapi_script", ROOT / "scripts" / "openapi.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.render())


def test_committed_spec_matches_the_code() -> None:
    committed = (ROOT / "openapi.json").read_text()

    assert committed == generated_spec(), (
        "openapi.json is out of date: run `uv run python scripts/openapi.py` and commit it"
    )


def test_spec_lists_every_route_with_json_errors() -> None:
    spec = json.loads(generated_spec())
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}

    assert routes == {
        ("POST", f"{P}/generate"),
        ("POST", f"{P}/train"),
        ("POST", f"{P}/proceed"),
        ("GET", f"{P}/runs"),
        ("GET", f"{P}/runs/{{run_id}}"),
        ("DELETE", f"{P}/runs/{{run_id}}"),
        ("GET", f"{P}/runs/{{run_id}}/pairs"),
        ("POST", f"{P}/runs/{{run_id}}/cancel"),
        ("GET", f"{P}/settings"),
        ("PUT", f"{P}/settings"),
    }
    for ops in spec["paths"].values():
        for op in ops.values():
            for code, answer in op["responses"].items():
                if code.startswith("4"):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorOut"}
    assert spec["components"]["securitySchemes"]["supabase"]["scheme"] == "bearer"
