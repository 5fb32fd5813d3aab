"""template.yaml, read as data: the handlers, the layers, the state machine's wiring."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deepmem.local.workflow import placeholders

from tests.deployed_support import template as load_template

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = {
    "RunsFunction": "runs",
    "ProceedFunction": "proceed",
    "DeleteFunction": "delete",
    "SettingsFunction": "settings",
    "GenerateBatchFunction": "generate_batch",
    "TrainFunction": "train",
    "RecordFailureFunction": "record_failure",
    "AuthorizerFunction": "authorizer",
    "DashboardFunction": "dashboard",
}
#: The admin page's routes: static files and its configuration, without the authorizer.
PAGE_ROUTES = {"GET /", "GET /dashboard/{file+}"}
HEAVY = {"GenerateBatchFunction", "TrainFunction"}
API_PREFIX = "/v1/api/deep-memory"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_the_functions_of_the_design_and_no_other(template: dict[str, Any]) -> None:
    assert set(resources(template, "AWS::Serverless::Function")) == set(FUNCTIONS)


@pytest.mark.parametrize(("logical_id", "folder"), sorted(FUNCTIONS.items()))
def test_every_function_has_its_handler_file(
    template: dict[str, Any], logical_id: str, folder: str
) -> None:
    function = template["Resources"][logical_id]["Properties"]
    assert function["CodeUri"] == f"functions/{folder}/"
    handler = function.get("Handler") or template["Globals"]["Function"]["Handler"]
    module, name = handler.rsplit(".", 1)
    source = ROOT / "functions" / folder / f"{module}.py"
    assert source.is_file(), f"{source} is missing"
    tree = ast.parse(source.read_text())
    defined = {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    } | {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert name in defined, f"{source} defines no {name}"


def test_every_asl_placeholder_is_substituted_and_nothing_else(template: dict[str, Any]) -> None:
    machine = template["Resources"]["TrainingStateMachine"]["Properties"]
    definition = (ROOT / machine["DefinitionUri"]).read_text()
    substitutions = machine["DefinitionSubstitutions"]
    assert set(substitutions) == placeholders(definition)
    for name, value in substitutions.items():
        function = name.removesuffix("Arn")
        assert value == {"Fn::GetAtt": f"{function}.Arn"}
        # the state machine may invoke exactly the functions it names
    invoked = {
        p["LambdaInvokePolicy"]["FunctionName"]["Ref"]
        for p in machine["Policies"]
        if isinstance(p, dict) and "LambdaInvokePolicy" in p
    }
    assert invoked == {name.removesuffix("Arn") for name in substitutions}


def test_the_state_machine_logs_and_traces(template: dict[str, Any]) -> None:
    machine = template["Resources"]["TrainingStateMachine"]["Properties"]
    assert machine["Type"] == "STANDARD"
    assert machine["Tracing"] == {"Enabled": True}
    destination = machine["Logging"]["Destinations"][0]["CloudWatchLogsLogGroup"]
    assert destination["LogGroupArn"] == {"Fn::GetAtt": "StateMachineLogGroup.Arn"}


def test_the_status_change_rule_sends_failures_of_our_machine_to_record_failure(
    template: dict[str, Any],
) -> None:
    events = template["Resources"]["RecordFailureFunction"]["Properties"]["Events"]
    (rule,) = events.values()
    assert rule["Type"] == "EventBridgeRule"
    pattern = rule["Properties"]["Pattern"]
    assert pattern["source"] == ["aws.states"]
    assert pattern["detail-type"] == ["Step Functions Execution Status Change"]
    assert sorted(pattern["detail"]["status"]) == ["ABORTED", "FAILED", "TIMED_OUT"]
    assert pattern["detail"]["stateMachineArn"] == [{"Ref": "TrainingStateMachine"}]
    assert rule["Properties"]["DeadLetterConfig"] == {"Type": "SQS"}


def test_record_failure_knows_the_machine_by_name_without_a_cycle(template: dict[str, Any]) -> None:
    machine = template["Resources"]["TrainingStateMachine"]["Properties"]
    env = template["Resources"]["RecordFailureFunction"]["Properties"]["Environment"]["Variables"]
    name = machine["Name"]["Fn::Sub"]
    assert env["STATE_MACHINE_ARN"]["Fn::Sub"].endswith(f":stateMachine:{name}")


def test_heavy_layer_only_where_the_dataset_is_read(template: dict[str, Any]) -> None:
    assert template["Globals"]["Function"]["Layers"] == [{"Ref": "CommonLayer"}]
    for logical_id in FUNCTIONS:
        layers = template["Resources"][logical_id]["Properties"].get("Layers", [])
        assert ({"Ref": "HeavyLayer"} in layers) is (logical_id in HEAVY), logical_id


def test_python_312_and_one_architecture(template: dict[str, Any]) -> None:
    function = template["Globals"]["Function"]
    assert function["Runtime"] == "python3.12"
    for layer in resources(template, "AWS::Serverless::LayerVersion").values():
        assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
        assert layer["Properties"]["CompatibleArchitectures"] == function["Architectures"]


def test_no_secret_in_the_environment(template: dict[str, Any]) -> None:
    env = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    for function in resources(template, "AWS::Serverless::Function").values():
        env |= function["Properties"].get("Environment", {}).get("Variables", {})
    plain = {"SUPABASE_SERVICE_KEY", "OPENAI_API_KEY", "ACTIVELOOP_TOKEN", "SUPABASE_JWT_SECRET"}
    assert not plain & set(env), "a secret's value must never be in the environment"
    for name, value in env.items():
        if name.endswith("_SECRET"):  # the ARN of a secret, resolved at run time
            assert value["Ref"].endswith("SecretArn"), name
    secret_params = [p for p in template["Parameters"] if p.endswith("SecretArn")]
    assert len(secret_params) == 3


def test_every_api_route_is_under_the_prefix_and_authorized_by_default(
    template: dict[str, Any],
) -> None:
    api = template["Resources"]["HttpApi"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "SupabaseAuthorizer"
    authorizer = api["Auth"]["Authorizers"]["SupabaseAuthorizer"]
    assert authorizer["FunctionArn"] == {"Fn::GetAtt": "AuthorizerFunction.Arn"}
    assert authorizer["EnableSimpleResponses"] is True
    routes = set()
    for logical_id, function in resources(template, "AWS::Serverless::Function").items():
        if logical_id == "DashboardFunction":
            continue  # the page: test_the_admin_page_is_served_by_the_api_without_a_token
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi":
                props = event["Properties"]
                assert props["Path"].startswith(API_PREFIX)
                assert "Auth" not in props  # nothing opts out of the authorizer
                routes.add(f"{props['Method']} {props['Path'].removeprefix(API_PREFIX)}")
    assert routes == {
        "POST /generate",
        "POST /train",
        "GET /runs",
        "GET /runs/{run_id}",
        "GET /runs/{run_id}/pairs",
        "POST /runs/{run_id}/cancel",
        "POST /proceed",
        "DELETE /runs/{run_id}",
        "GET /settings",
        "PUT /settings",
    }


def test_outputs(template: dict[str, Any]) -> None:
    assert {"ApiUrl", "StateMachineArn", "DashboardUrl"} <= set(template["Outputs"])


def test_the_admin_page_is_served_by_the_api_without_a_token(template: dict[str, Any]) -> None:
    function = template["Resources"]["DashboardFunction"]["Properties"]
    events = function["Events"].values()
    routes = {f"{e['Properties']['Method']} {e['Properties']['Path']}" for e in events}

    assert routes == PAGE_ROUTES
    for event in events:
        assert event["Type"] == "HttpApi"
        assert event["Properties"]["ApiId"] == {"Ref": "HttpApi"}
        assert event["Properties"]["Auth"] == {"Authorizer": "NONE"}
    assert "Policies" not in function  # it reads nothing but its own layer
    assert "HeavyLayer" not in json.dumps(function.get("Layers", []))
    url = template["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"]
    assert url == "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/"


def test_the_page_signs_in_with_the_projects_anon_key(template: dict[str, Any]) -> None:
    variables = template["Resources"]["DashboardFunction"]["Properties"]["Environment"]
    shared = template["Globals"]["Function"]["Environment"]["Variables"]

    assert variables["Variables"]["SUPABASE_ANON_KEY"] == {"Ref": "SupabaseAnonKey"}
    assert shared["SUPABASE_URL"] == {"Ref": "SupabaseUrl"}
    assert template["Parameters"]["SupabaseAnonKey"]["Default"] == ""


def test_cors_allows_the_configured_origin_with_the_pages_headers(
    template: dict[str, Any],
) -> None:
    cors = template["Resources"]["HttpApi"]["Properties"]["CorsConfiguration"]

    assert cors["AllowOrigins"] == [{"Ref": "CorsAllowOrigin"}]
    assert {"authorization", "content-type"} <= set(cors["AllowHeaders"])
    assert {"GET", "POST", "PUT", "DELETE"} <= set(cors["AllowMethods"])


def test_layer_requirements_keep_the_heavy_libraries_out_of_the_common_layer() -> None:
    common = (ROOT / "layers/common/requirements.txt").read_text().lower()
    heavy = (ROOT / "layers/heavy/requirements.txt").read_text().lower()
    for name in ("deeplake", "numpy", "openai", "onnxruntime"):
        assert name not in _packages(common), name
    assert {"deeplake", "numpy", "openai"} <= _packages(heavy)


def _packages(requirements: str) -> set[str]:
    names = set()
    for raw in requirements.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[\[=<>~! ]", line, maxsplit=1)[0])
    return names


def test_the_sample_events_are_the_builders_output() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_events.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for path in (ROOT / "events").glob("*.json"):
        json.loads(path.read_text())
