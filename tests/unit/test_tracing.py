"""Every function's Tracer patches the clients it calls, and only those."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from aws_xray_sdk.core.patcher import SUPPORTED_MODULES
from deepmem.config import FUNCTION_CLIENTS, FUNCTION_NEEDS, traced_clients

ROOT = Path(__file__).resolve().parents[2]
API = ("runs", "proceed", "delete", "settings")


def test_every_function_names_its_clients_in_x_rays_words() -> None:
    assert set(FUNCTION_CLIENTS) == set(FUNCTION_NEEDS)
    for clients in FUNCTION_CLIENTS.values():
        assert set(clients) <= set(SUPPORTED_MODULES)


@pytest.mark.parametrize("function", API)
def test_an_api_function_traces_aws_and_its_store(function: str) -> None:
    supabase = {"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_KEY_SECRET": "arn"}
    postgres = {"DATABASE_URL": "postgresql://db", **supabase}  # DATABASE_URL wins, as in wiring

    assert traced_clients(function, supabase) == ("botocore", "httpx")
    assert traced_clients(function, postgres) == ("botocore", "psycopg")
    assert traced_clients(function, {"DATABASE_URL": "", **supabase}) == ("botocore", "httpx")


def test_the_task_functions_trace_what_they_call() -> None:
    env = {"SUPABASE_URL": "https://x.supabase.co"}

    assert traced_clients("generate_batch", env) == ("botocore", "requests", "httpx")
    assert traced_clients("train", env) == ("botocore", "httpx", "requests")
    assert traced_clients("record_failure", {"DATABASE_URL": "x"}) == ("botocore", "psycopg")


def test_the_authorizer_reaches_aws_only_for_a_legacy_secret() -> None:
    env = {"SUPABASE_URL": "https://x.supabase.co"}

    assert traced_clients("authorizer", env) == ("httplib",)
    assert traced_clients("authorizer", {**env, "SUPABASE_JWT_SECRET_NAME": "s"}) == (
        "httplib",
        "botocore",
    )


def tracer_calls() -> list[tuple[Path, ast.Call]]:
    sources = [*(ROOT / "functions").glob("*/app.py"), *(ROOT / "layers/common").rglob("*.py")]
    return [
        (path, node)
        for path in sources
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "Tracer"
    ]


def test_no_tracer_patches_everything_x_ray_knows() -> None:
    calls = tracer_calls()

    assert len(calls) == 5  # 4 task/authorizer handlers, and deepmem.api.app for the API ones
    for path, call in calls:
        keywords = {k.arg for k in call.keywords}
        assert keywords == {"patch_modules"}, f"{path}:{call.lineno}"  # no service= either
