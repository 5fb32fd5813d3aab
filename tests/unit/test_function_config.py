"""Each function checks, when it builds its service, the configuration it cannot work without,
and says which variable is missing; the template gives every function what it needs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from deepmem.config import (
    FUNCTION_NEEDS,
    LAMBDA_NEEDS,
    Config,
    MissingConfigurationError,
    needs_of,
    require,
)
from deepmem.local.lambda_runtime import LocalLambdaContext

from tests.api_support import api_event, load_function
from tests.deployed_support import template as load_template
from tests.fakes import events
from tests.unit.test_template import FUNCTIONS

ROOT = Path(__file__).resolve().parents[2]


def test_every_function_has_its_needs_listed() -> None:
    assert set(FUNCTION_NEEDS) == set(FUNCTIONS.values())


def test_a_missing_variable_is_named() -> None:
    with pytest.raises(MissingConfigurationError) as caught:
        require(Config(DATABASE_URL="postgresql://db"), "runs")

    assert str(caught.value) == "the runs function is not configured: set STATE_MACHINE_ARN"


def test_inside_lambda_train_needs_somewhere_lasting_for_its_artifacts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEEPMEM_ARTIFACTS", raising=False)
    config = Config(DATABASE_URL="postgresql://db")
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    assert require(config, "train") is config  # locally, <home>/artifacts will do
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "TrainFunction")

    with pytest.raises(MissingConfigurationError, match="set DEEPMEM_ARTIFACTS"):
        require(config, "train")
    assert set(LAMBDA_NEEDS) <= set(FUNCTION_NEEDS)


def test_either_database_will_do() -> None:
    arn = "arn:aws:states:::x"
    for config in (
        Config(DATABASE_URL="postgresql://db", STATE_MACHINE_ARN=arn),
        Config(SUPABASE_URL="https://x.supabase.co", STATE_MACHINE_ARN=arn),
    ):
        assert require(config, "proceed") is config


def test_the_template_gives_every_function_what_it_needs() -> None:
    template = load_template()
    shared = template["Globals"]["Function"]["Environment"]["Variables"]
    for logical_id, folder in FUNCTIONS.items():
        own = template["Resources"][logical_id]["Properties"].get("Environment", {})
        variables = set(shared) | set(own.get("Variables", {}))
        for group in needs_of(folder, {"AWS_LAMBDA_FUNCTION_NAME": logical_id}):
            assert variables & set(group), f"{logical_id} has none of {group}"


@pytest.fixture
def bare_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for variable in ("DATABASE_URL", "SUPABASE_URL", "STATE_MACHINE_ARN"):
        monkeypatch.delenv(variable, raising=False)
    from deepmem.config import load_config

    load_config.cache_clear()
    yield
    load_config.cache_clear()


def test_a_task_function_without_a_database_fails_naming_it(bare_environment: None) -> None:
    generate_batch = load_function("generate_batch")
    generate_batch._service.cache_clear()

    with pytest.raises(MissingConfigurationError, match="DATABASE_URL or SUPABASE_URL"):
        generate_batch.handle(events.plan_input(), generate_batch._service(), None)


def test_an_api_function_without_a_state_machine_answers_with_the_reason(
    bare_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepmem.api import app

    monkeypatch.setenv("DATABASE_URL", "postgresql://127.0.0.1:1/none")
    monkeypatch.setattr(app, "_service", None)
    runs = load_function("runs")
    monkeypatch.setattr(app, "_function", "runs")  # as a cold start of RunsFunction sets it

    with pytest.raises(MissingConfigurationError, match="STATE_MACHINE_ARN"):
        app.build_run_service()
    event = api_event("GET", "/v1/api/deep-memory/runs")
    response = runs.handler(event, LocalLambdaContext(function_name="runs"))

    assert response["statusCode"] == 500  # never the local workflow's moto in a Lambda


@pytest.mark.parametrize("function", ["settings", "delete"])
def test_functions_that_start_no_execution_need_no_state_machine(function: str) -> None:
    config = Config(DATABASE_URL="postgresql://db")

    assert require(config, function) is config
    assert all("STATE_MACHINE_ARN" not in group for group in needs_of(function))
