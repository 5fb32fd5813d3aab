"""`Config` reads the environment by alias, as pydantic-settings did before it was dropped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from deepmem.config import Config, revealed
from pydantic import ValidationError


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for field in Config.model_fields.values():
        assert field.alias
        monkeypatch.delenv(field.alias, raising=False)
    monkeypatch.delenv("HOME", raising=False)
    yield monkeypatch


def test_defaults_without_an_environment(environment: pytest.MonkeyPatch) -> None:
    config = Config()

    assert config.home == Path(".deepmem")
    assert config.database_url is None
    assert config.llm_timeout_seconds == 60.0
    assert config.supabase_jwt_audience == "authenticated"
    assert config.dataset_path == str(Path(".deepmem") / "dataset")


def test_the_environment_is_read_by_alias_only(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("DEEPMEM_HOME", "/srv/deepmem")
    environment.setenv("HOME", "/root")  # a field is named home: never read as such
    environment.setenv("DEEPMEM_LLM_MAX_RETRIES", "3")

    config = Config()

    assert config.home == Path("/srv/deepmem")
    assert config.llm_max_retries == 3


def test_aliases_match_whatever_their_case(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("database_url", "postgresql://lower")

    assert Config().database_url == "postgresql://lower"
    assert Config(supabase_url="https://kw").supabase_url == "https://kw"


def test_given_values_win_and_the_environment_gives_the_rest(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("DATABASE_URL", "postgresql://env")
    environment.setenv("STATE_MACHINE_ARN", "arn:aws:states:::env")

    config = Config(DATABASE_URL="postgresql://given", DEEPMEM_HOME=Path("/given"))

    assert config.database_url == "postgresql://given"
    assert config.home == Path("/given")
    assert config.state_machine_arn == "arn:aws:states:::env"


def test_field_names_and_unknown_names_are_ignored(environment: pytest.MonkeyPatch) -> None:
    config = Config(home="/not/this", artifacts="nor/this", NOT_A_SETTING="x")

    assert config.home == Path(".deepmem")
    assert config.artifacts == ""


def test_an_empty_value_counts_as_set(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("OPENAI_BASE_URL", "")  # what the template passes for "none"

    assert Config().openai_base_url == ""


@pytest.mark.parametrize(
    ("alias", "value", "error"),
    [
        ("DEEPMEM_LLM_TIMEOUT", "0", "greater_than"),
        ("DEEPMEM_LLM_TIMEOUT", "", "float_parsing"),
        ("DEEPMEM_LLM_MAX_RETRIES", "21", "less_than_equal"),
    ],
)
def test_invalid_values_are_refused_by_alias(
    environment: pytest.MonkeyPatch, alias: str, value: str, error: str
) -> None:
    environment.setenv(alias, value)

    with pytest.raises(ValidationError) as caught:
        Config()

    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [((alias,), error)]


def test_keys_are_kept_out_of_repr_and_logs(environment: pytest.MonkeyPatch) -> None:
    keys = {
        "OPENAI_API_KEY": "sk-openai-secret-1",
        "SUPABASE_SERVICE_KEY": "service-secret-2",
        "ACTIVELOOP_TOKEN": "activeloop-secret-3",
        "SUPABASE_JWT_SECRET": "jwt-secret-4",
    }
    config = Config.model_validate(keys)
    shown = [repr(config), str(config), config.model_dump_json(), f"{config!r}"]

    assert [key for key in keys.values() if any(key in text for text in shown)] == []
    assert revealed(config.openai_api_key) == "sk-openai-secret-1"
    assert revealed(config.supabase_service_key) == "service-secret-2"
    assert revealed(None) is None
