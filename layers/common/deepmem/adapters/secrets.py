"""Secrets from Secrets Manager through Powertools Parameters, cached across invocations.

The template passes secret ARNs (never the secrets) in the environment; a handler resolves
them here on first use and the cache spares the other invocations of a warm container.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from deepmem.domain.errors import DeepmemError

#: Seconds a secret is kept before it is read again (a rotated secret is picked up after this).
DEFAULT_MAX_AGE = 300


class SecretError(DeepmemError):
    """A configured secret could not be read."""


def get_secret(secret_id: str, *, max_age: int = DEFAULT_MAX_AGE, client: Any = None) -> str:
    """The secret's string value. `client` (a boto3 Secrets Manager client) is for tests."""
    try:
        if client is not None:
            provider = parameters.SecretsProvider(boto3_client=client)
            value = provider.get(secret_id, max_age=max_age)
        else:
            value = parameters.get_secret(secret_id, max_age=max_age)
    except GetParameterError as exc:
        raise SecretError(f"cannot read secret {secret_id}: {exc}") from exc
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if not isinstance(value, str):
        raise SecretError(f"secret {secret_id} is not a string")
    return value


def value_or_secret(
    value: str | None, secret_id: str | None, *, max_age: int = DEFAULT_MAX_AGE
) -> str | None:
    """A plain value (local runs) wins; else the secret it names; else None."""
    if value:
        return value
    if secret_id:
        return get_secret(secret_id, max_age=max_age)
    return None
