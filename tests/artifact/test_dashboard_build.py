"""The admin page as `sam build` ships it: the built `dashboard` function, with only its folder,
its layer and the runtime's boto3, serves the page, its modules and the vendored libraries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.api_support import api_event
from tests.deployed_support import deployed_functions, run_deployed

PAGE_PROBE = """
import importlib, json
module = importlib.import_module("app")
for event in json.loads({events!r}):
    response = module.handler(event, None)
    print("RESPONSE " + json.dumps({{
        "path": event["rawPath"],
        "status": response["statusCode"],
        "type": response["headers"].get("content-type"),
        "length": len(response["body"]),
    }}))
"""
PATHS = (
    "/",
    "/dashboard/app.js",
    "/dashboard/style.css",
    "/dashboard/config.json",
    "/dashboard/vendor/htm-preact.umd.js",
    "/dashboard/vendor/supabase.js",
)


@pytest.fixture(scope="module")
def answers(sdk: Path) -> dict[str, dict[str, object]]:
    (function,) = [f for f in deployed_functions() if f.logical_id == "DashboardFunction"]
    events = [api_event("GET", path, user_id=None) for path in PATHS]
    result = run_deployed(function, PAGE_PROBE.format(events=json.dumps(events)), sdk)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [x for x in result.stdout.splitlines() if x.startswith("RESPONSE ")]
    parsed = [json.loads(line.removeprefix("RESPONSE ")) for line in lines]
    return {str(answer["path"]): answer for answer in parsed}


@pytest.mark.parametrize("path", PATHS)
def test_the_built_function_serves_every_file_of_the_page(
    answers: dict[str, dict[str, object]], path: str
) -> None:
    answer = answers[path]

    assert answer["status"] == 200, answer
    assert isinstance(answer["length"], int) and answer["length"] > 0
