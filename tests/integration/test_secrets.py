"""Secrets through Powertools Parameters, against moto's Secrets Manager."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from deepmem.adapters.secrets import SecretError, get_secret, value_or_secret
from moto import mock_aws


@pytest.fixture
def secretsmanager() -> Iterator[Any]:
    with mock_aws():
        parameters.clear_caches()
        yield boto3.client("secretsmanager", region_name="us-east-1")
        parameters.clear_caches()


def test_a_secret_is_read_by_its_arn(secretsmanager: Any) -> None:
    arn = secretsmanager.create_secret(Name="deepmem/openai", SecretString="sk-test")["ARN"]
    assert get_secret(arn) == "sk-test"


def test_a_secret_is_cached(secretsmanager: Any) -> None:
    arn = secretsmanager.create_secret(Name="deepmem/supabase", SecretString="v1")["ARN"]
    assert get_secret(arn) == "v1"
    secretsmanager.put_secret_value(SecretId=arn, SecretString="v2")

    assert get_secret(arn) == "v1"  # warm containers do not call Secrets Manager again
    parameters.clear_caches()  # what a new container, or max_age later, sees
    assert get_secret(arn) == "v2"


def test_a_given_client_is_used(secretsmanager: Any) -> None:
    secretsmanager.create_secret(Name="deepmem/activeloop", SecretString="token")
    assert get_secret("deepmem/activeloop", client=secretsmanager) == "token"


def test_a_missing_secret_is_a_secret_error(secretsmanager: Any) -> None:
    with pytest.raises(SecretError, match="deepmem/missing"):
        get_secret("deepmem/missing")


def test_a_plain_value_wins_over_the_secret(secretsmanager: Any) -> None:
    arn = secretsmanager.create_secret(Name="deepmem/key", SecretString="from-secret")["ARN"]
    assert value_or_secret("local-value", arn) == "local-value"
    assert value_or_secret(None, arn) == "from-secret"
    assert value_or_secret(None, None) is None
