"""What `sam build` produced, as Lambda gets it: bytecode for every module, within the size
limit, handlers that import on their own and touch only what their routes need."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.api_support import api_event
from tests.deployed_support import (
    BUILD,
    DeployedFunction,
    deployed_functions,
    import_probe,
    parse_probe,
    run_deployed,
)

FUNCTIONS = {f.logical_id: f for f in deployed_functions()}
API = ("RunsFunction", "ProceedFunction", "DeleteFunction", "SettingsFunction")
API_AND_AUTHORIZER = (*API, "AuthorizerFunction")
HEAVY = ("deeplake", "numpy", "openai", "onnxruntime")
#: Never needed to import a handler: the spec's models, the settings library deepmem dropped,
#: the async AWS client only DeepLake uses (the Tracer patched it when it patched everything).
NOT_AT_IMPORT = ("aws_lambda_powertools.event_handler.openapi.models", "pydantic_settings")
NOT_AT_IMPORT_ROOTS = ("aiobotocore",)
#: Lambda's limit on a function and its layers, unzipped (250 MiB).
LAMBDA_UNZIPPED_LIMIT = 262_144_000
#: `flags` of a hash-based .pyc whose source is never checked (PEP 552).
UNCHECKED_HASH = 0b01


def shipped_folders() -> list[Path]:
    layers = {layer for f in FUNCTIONS.values() for layer in f.layers}
    return sorted({*layers, *(f.folder for f in FUNCTIONS.values())})


@pytest.mark.parametrize("folder", shipped_folders(), ids=lambda p: str(p.relative_to(BUILD)))
def test_every_module_ships_its_bytecode(folder: Path) -> None:
    modules = sorted(folder.rglob("*.py"))
    assert modules, f"nothing built in {folder}"
    missing, checked, stale = [], [], []
    for source in modules:
        compiled = source.parent / "__pycache__" / f"{source.stem}.cpython-312.pyc"
        if not compiled.is_file():
            missing.append(source)
            continue
        header = compiled.read_bytes()[:16]
        if int.from_bytes(header[4:8], "little") != UNCHECKED_HASH:
            checked.append(compiled)
        elif header[8:16] != importlib.util.source_hash(source.read_bytes()):
            stale.append(compiled)

    assert missing == [], f"{len(missing)} modules without bytecode, e.g. {missing[:3]}"
    assert checked == [], f"bytecode Python would check against its source: {checked[:3]}"
    assert stale == [], f"bytecode of another source than the one shipped: {stale[:3]}"


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_a_function_and_its_layers_fit_lambdas_limit(logical_id: str) -> None:
    function = FUNCTIONS[logical_id]
    size = sum(
        path.stat().st_size
        for folder in (function.folder, *function.layers)
        for path in folder.rglob("*")
        if path.is_file()
    )

    assert size <= LAMBDA_UNZIPPED_LIMIT, f"{size / 2**20:.1f} MiB unzipped"


def imported(function: DeployedFunction, sdk: Path, **environment: str) -> set[str]:
    if environment:
        function = DeployedFunction(
            **{**function.__dict__, "environment": {**function.environment, **environment}}
        )
    probe = parse_probe(run_deployed(function, import_probe(function), sdk))
    assert probe["callable"]
    return set(probe["modules"])


@pytest.mark.parametrize("logical_id", API_AND_AUTHORIZER)
def test_no_api_handler_imports_a_heavy_library(logical_id: str, sdk: Path) -> None:
    modules = imported(FUNCTIONS[logical_id], sdk)

    assert sorted({m.split(".")[0] for m in modules} & set(HEAVY)) == []


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_a_handler_imports_nothing_its_routes_do_not_need(logical_id: str, sdk: Path) -> None:
    modules = imported(FUNCTIONS[logical_id], sdk)

    assert sorted(modules & set(NOT_AT_IMPORT)) == []
    assert sorted({m.split(".")[0] for m in modules} & set(NOT_AT_IMPORT_ROOTS)) == []


@pytest.mark.parametrize("logical_id", (*API, "RecordFailureFunction", "TrainFunction"))
def test_a_handler_on_postgresql_traces_psycopg(logical_id: str, sdk: Path) -> None:
    # The template's store is Supabase (httpx); DATABASE_URL switches the store and the patch.
    modules = imported(FUNCTIONS[logical_id], sdk, DATABASE_URL="postgresql://db.invalid/x")

    assert "aws_xray_sdk.ext.psycopg.patch" in modules
    assert "aws_xray_sdk.ext.httpx.patch" not in modules or logical_id == "TrainFunction"


REQUEST_PROBE = """
import importlib, json, os
# Lambda sets the trace header per invocation.
os.environ["_X_AMZN_TRACE_ID"] = (
    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
)
class Context:
    function_name = "RunsFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:RunsFunction"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    log_group_name = "/aws/lambda/RunsFunction"
    log_stream_name = "bench"
    def get_remaining_time_in_millis(self):
        return 29_000
module = importlib.import_module("app")
response = module.handler(json.loads({event!r}), Context())
print("RESPONSE " + json.dumps(response))
"""


def test_an_api_handler_answers_as_deployed_with_tracing_on(sdk: Path) -> None:
    # A request that validation refuses never reaches the store: no database needed.
    event = api_event("GET", "/v1/api/deep-memory/runs?limit=0")
    probe = REQUEST_PROBE.format(event=json.dumps(event))
    result = run_deployed(FUNCTIONS["RunsFunction"], probe, sdk)

    assert result.returncode == 0, result.stderr[-4000:]
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("RESPONSE ")]
    response = json.loads(line.removeprefix("RESPONSE "))
    assert response["statusCode"] == 422
    assert json.loads(response["body"])["detail"][0]["loc"] == ["query", "limit"]


TASK_ADAPTERS_PROBE = """
import importlib, json
from deepmem.adapters.dataset.deeplake import import_deeplake
import_deeplake()  # as the adapters do: no version check over the network
for name in {modules!r}:
    importlib.import_module(name)
print("IMPORTED " + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})))
"""
#: What the heavy functions import on their first task, each from the layers as built (the heavy
#: layer's Makefile prunes tests, stubs and numpy's f2py: none of this may need them).
TASK_MODULES = (
    "deeplake.client.client",
    "deeplake.core.vectorstore",
    "deepmem.adapters.dataset.corpus",
    "deepmem.adapters.generators.openai",
    "deepmem.adapters.embedders.openai",
    "deepmem.adapters.trainers.deep_memory",
    "deepmem.adapters.trainers.query_adapter",
    "deepmem.adapters.trainers.artifacts",
)


@pytest.mark.parametrize("logical_id", ("GenerateBatchFunction", "TrainFunction"))
def test_a_heavy_function_imports_what_its_tasks_need(logical_id: str, sdk: Path) -> None:
    probe = TASK_ADAPTERS_PROBE.format(modules=TASK_MODULES, heavy=HEAVY)
    result = run_deployed(FUNCTIONS[logical_id], probe, sdk)

    assert result.returncode == 0, result.stderr[-4000:]
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("IMPORTED ")]
    roots = {m.split(".")[0] for m in json.loads(line.removeprefix("IMPORTED "))}
    assert {"deeplake", "numpy", "openai"} <= roots


def test_the_common_layer_ships_the_package_without_the_local_room_or_the_cli() -> None:
    package = BUILD / "CommonLayer" / "python" / "deepmem"

    assert (package / "wiring.py").is_file() and (package / "adapters").is_dir()
    assert not (package / "local").exists()
    assert not (package / "cli").exists()
