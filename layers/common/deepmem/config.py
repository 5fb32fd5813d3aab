"""Configuration from the environment, read once at the edge (a handler, the CLI)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from deepmem.domain.errors import ConfigurationError
from deepmem.domain.handover import GenerationLimits
from deepmem.domain.trainers import DEEP_MEMORY_MAX_PAIRS


class Config(BaseModel):
    """Every knob that is not an admin setting. Unset parts fall back to the embedded default.

    `Config()` reads the environment; `Config(DATABASE_URL=...)` takes what it is given, by
    alias, and the environment for the rest. Aliases match whatever their case, an empty value
    counts as set, defaults are validated too: what pydantic-settings did, without its import
    (0.2 to 0.4 s of every cold start) for a dozen strings.
    """

    # Only the aliases are read from the environment: a field name such as `home` must never
    # pick up an unrelated variable such as HOME.
    model_config = ConfigDict(extra="ignore", populate_by_name=False, validate_default=True)

    home: Path = Field(default=Path(".deepmem"), alias="DEEPMEM_HOME")
    dataset: str = Field(
        default="",
        alias="DEEPMEM_DATASET",
        description="DeepLake path; empty means <home>/dataset (the embedded default)",
    )
    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    supabase_url: str | None = Field(default=None, alias="SUPABASE_URL")
    # Keys are SecretStr: repr() and logs show "**********"; `revealed()` gives the value.
    supabase_service_key: SecretStr | None = Field(default=None, alias="SUPABASE_SERVICE_KEY")
    supabase_service_key_secret: str | None = Field(
        default=None, alias="SUPABASE_SERVICE_KEY_SECRET", description="Secrets Manager name/ARN"
    )
    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY")
    openai_api_key_secret: str | None = Field(default=None, alias="OPENAI_API_KEY_SECRET")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    generator: Literal["", "openai", "offline"] = Field(
        default="",
        alias="DEEPMEM_GENERATOR",
        description="openai (the default: the `llm_model` setting over OPENAI_BASE_URL, which "
        "needs OPENAI_API_KEY or a base URL) or offline (questions from the chunk's own words)",
    )
    max_failed_chunks: int = Field(
        default=8,
        ge=1,
        le=100_000,
        alias="DEEPMEM_MAX_FAILED_CHUNKS",
        description="chunks failing in a row (after their retries) that stop a generation",
    )
    llm_timeout_seconds: float = Field(default=60.0, gt=0, alias="DEEPMEM_LLM_TIMEOUT")
    llm_max_retries: int = Field(default=6, ge=0, le=20, alias="DEEPMEM_LLM_MAX_RETRIES")
    activeloop_token: SecretStr | None = Field(default=None, alias="ACTIVELOOP_TOKEN")
    activeloop_token_secret: str | None = Field(default=None, alias="ACTIVELOOP_TOKEN_SECRET")
    activeloop_api_url: str = Field(
        default="https://app.activeloop.ai", alias="DEEPMEM_ACTIVELOOP_API_URL"
    )
    state_machine_arn: str | None = Field(default=None, alias="STATE_MACHINE_ARN")
    local_lease_seconds: float = Field(
        default=15.0,
        gt=0,
        alias="DEEPMEM_LOCAL_LEASE_SECONDS",
        description="a local execution's lease on its run; renewed every third of it",
    )
    # The API authorizer: Supabase access tokens, admins only.
    supabase_jwks_url: str | None = Field(
        default=None,
        alias="SUPABASE_JWKS_URL",
        description="empty means <SUPABASE_URL>/auth/v1/.well-known/jwks.json",
    )
    supabase_jwt_issuer: str | None = Field(
        default=None, alias="SUPABASE_JWT_ISSUER", description="empty means <SUPABASE_URL>/auth/v1"
    )
    supabase_jwt_audience: str = Field(default="authenticated", alias="SUPABASE_JWT_AUDIENCE")
    # Public by design (the browser holds it; RLS guards the data): the admin page signs in
    # with Supabase Auth when the project URL and this key are both set.
    supabase_anon_key: str | None = Field(default=None, alias="SUPABASE_ANON_KEY")
    supabase_jwt_secret: SecretStr | None = Field(
        default=None, alias="SUPABASE_JWT_SECRET", description="legacy HS256 secret (opt-in)"
    )
    supabase_jwt_secret_name: str | None = Field(
        default=None, alias="SUPABASE_JWT_SECRET_NAME", description="Secrets Manager name/ARN"
    )
    admin_user_ids: str = Field(
        default="", alias="DEEPMEM_ADMIN_USER_IDS", description="comma-separated user ids"
    )
    artifacts: str = Field(
        default="",
        alias="DEEPMEM_ARTIFACTS",
        description="s3://bucket/prefix or a folder; empty means <home>/artifacts",
    )

    # What one generation execution may spend before it hands over to the next one, and what
    # the plan's estimate assumes (deepmem/domain/handover.py).
    execution_event_budget: int = Field(
        default=10_000, ge=1, le=25_000, alias="DEEPMEM_EXECUTION_EVENT_BUDGET"
    )
    execution_seconds_budget: float = Field(
        default=72_000.0, ge=0, le=84_600, alias="DEEPMEM_EXECUTION_SECONDS_BUDGET"
    )
    batch_function_seconds: float = Field(
        default=900.0, gt=0, le=900, alias="DEEPMEM_BATCH_FUNCTION_TIMEOUT"
    )
    llm_seconds_per_call: float = Field(default=2.0, gt=0, alias="DEEPMEM_LLM_SECONDS_PER_CALL")
    max_run_days: float = Field(default=14.0, gt=0, alias="DEEPMEM_MAX_RUN_DAYS")
    # The query adapter of a large run trains as a streamed job, in slices of one invocation.
    adapter_stream_above: int = Field(default=200_000, ge=0, alias="DEEPMEM_ADAPTER_STREAM_ABOVE")
    train_seconds_per_call: float = Field(
        default=600.0, gt=0, le=900, alias="DEEPMEM_TRAIN_SECONDS_PER_CALL"
    )
    deep_memory_max_pairs: int = Field(
        default=DEEP_MEMORY_MAX_PAIRS, ge=1, alias="DEEPMEM_DEEP_MEMORY_MAX_PAIRS"
    )

    @model_validator(mode="before")
    @classmethod
    def _given_then_environment(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        given = {str(name).lower(): value for name, value in data.items()}
        environment = {name.lower(): value for name, value in os.environ.items()}
        values: dict[str, Any] = {}
        for field in cls.model_fields.values():
            if not field.alias:
                continue
            name = field.alias.lower()
            if field.alias in data:
                values[field.alias] = data[field.alias]
            elif name in given:
                values[field.alias] = given[name]
            elif name in environment:
                values[field.alias] = environment[name]
        return values

    @property
    def generation_limits(self) -> GenerationLimits:
        return GenerationLimits(
            event_budget=self.execution_event_budget,
            seconds_budget=self.execution_seconds_budget,
            function_seconds=self.batch_function_seconds,
            seconds_per_llm_call=self.llm_seconds_per_call,
            max_run_seconds=self.max_run_days * 86_400,
        )

    @property
    def jwks_url(self) -> str | None:
        if self.supabase_jwks_url:
            return self.supabase_jwks_url
        if self.supabase_url:
            return f"{self.supabase_url.rstrip('/')}/auth/v1/.well-known/jwks.json"
        return None

    @property
    def jwt_issuer(self) -> str | None:
        if self.supabase_jwt_issuer:
            return self.supabase_jwt_issuer
        return f"{self.supabase_url.rstrip('/')}/auth/v1" if self.supabase_url else None

    @property
    def admin_ids(self) -> frozenset[str]:
        return frozenset(part.strip() for part in self.admin_user_ids.split(",") if part.strip())

    @property
    def dataset_path(self) -> str:
        return self.dataset or str(self.home / "dataset")

    @property
    def artifacts_location(self) -> str:
        return self.artifacts or str(self.home / "artifacts")


def revealed(secret: SecretStr | None) -> str | None:
    """A key's value, for the one client that sends it."""
    return secret.get_secret_value() if secret is not None else None


#: One of these makes a run store: PostgreSQL directly, or Supabase (with its service key).
DATABASE = ("DATABASE_URL", "SUPABASE_URL")
STATE_MACHINE = ("STATE_MACHINE_ARN",)

#: What each Lambda function cannot work without, as groups of variables of which one must be
#: set. Checked when a function builds its service (its first invocation), so a misconfigured
#: stack fails at once with a message that names the variable, not deep inside a request.
FUNCTION_NEEDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "runs": (DATABASE, STATE_MACHINE),
    "proceed": (DATABASE, STATE_MACHINE),
    # Neither starts nor stops an execution: the workflow is built only where one is.
    "delete": (DATABASE,),
    "settings": (DATABASE,),
    "generate_batch": (DATABASE,),
    "train": (DATABASE,),
    "record_failure": (DATABASE,),
    "authorizer": (),
    "dashboard": (),
}


#: The client libraries each Lambda function calls, by the X-Ray SDK's names; `traced_clients`
#: adds the run store's. Its Tracer patches these and no other: patching a library imports it,
#: and patching all that X-Ray supports (Powertools' default) imports aiobotocore, requests,
#: sqlite3... on every cold start. OpenAI's client (httpx2 since openai 3) has no X-Ray patch.
FUNCTION_CLIENTS: dict[str, tuple[str, ...]] = {
    # Step Functions (runs, proceed); Secrets Manager (all four).
    "runs": ("botocore",),
    "proceed": ("botocore",),
    "delete": ("botocore",),
    "settings": ("botocore",),
    # Secrets Manager, s3:// datasets; requests: DeepLake's own calls to Activeloop.
    "generate_batch": ("botocore", "requests"),
    # The same, the artifacts on S3, and Deep Memory's job status over httpx.
    "train": ("botocore", "httpx", "requests"),
    "record_failure": ("botocore",),
    # The JWKS over urllib (http.client); Secrets Manager only for a legacy HS256 secret.
    "authorizer": ("httplib",),
    # The admin page: static files and its configuration, no client.
    "dashboard": (),
}


def traced_clients(function: str, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """What `function`'s Tracer patches (`Tracer(patch_modules=...)`): its clients, and the run
    store's (psycopg with DATABASE_URL, else httpx for Supabase's PostgREST). Read from the
    environment unvalidated, at import: a bad value still fails where it always did, when the
    function builds its service."""
    given = {
        name.lower()
        for name, value in (os.environ if environ is None else environ).items()
        if value
    }
    clients = list(FUNCTION_CLIENTS[function])
    if function == "authorizer":
        if "supabase_jwt_secret_name" in given:
            clients.append("botocore")
    elif "database_url" in given:
        clients.append("psycopg")
    elif "supabase_url" in given:
        clients.append("httpx")
    return tuple(dict.fromkeys(clients))


class MissingConfigurationError(ConfigurationError):
    """A function started without a variable it needs."""


def missing_variables(config: Config, needs: tuple[tuple[str, ...], ...]) -> list[str]:
    """The groups of `needs` of which no variable is set, each as "A or B"."""
    values = {
        field.alias: getattr(config, name)
        for name, field in Config.model_fields.items()
        if field.alias
    }
    return [" or ".join(group) for group in needs if not any(values.get(v) for v in group)]


#: What a function needs only inside Lambda, where a local fallback would lose data: the query
#: adapter's artifacts under the container's /tmp would vanish with it.
LAMBDA_NEEDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "train": (("DEEPMEM_ARTIFACTS",),),
}


def needs_of(
    function: str, environ: Mapping[str, str] | None = None
) -> tuple[tuple[str, ...], ...]:
    """`FUNCTION_NEEDS`, and inside Lambda (AWS_LAMBDA_FUNCTION_NAME set) `LAMBDA_NEEDS` too."""
    return FUNCTION_NEEDS[function] + (LAMBDA_NEEDS.get(function, ()) if in_lambda(environ) else ())


def in_lambda(environ: Mapping[str, str] | None = None) -> bool:
    """Running as a Lambda function, where no local fallback may stand in for a service."""
    return bool((os.environ if environ is None else environ).get("AWS_LAMBDA_FUNCTION_NAME"))


def refuse_in_lambda(variable: str, what: str) -> None:
    """Inside Lambda, MissingConfigurationError naming `variable`: the local fallback a caller
    would build instead would lose its work with the container."""
    if in_lambda():
        raise MissingConfigurationError(f"{what} but is not configured: set {variable}")


def require(config: Config, function: str) -> Config:
    """`config`, or MissingConfigurationError naming every variable `function` lacks."""
    missing = missing_variables(config, needs_of(function))
    if missing:
        raise MissingConfigurationError(
            f"the {function} function is not configured: set {'; '.join(missing)}"
        )
    return config


@lru_cache(maxsize=1)
def load_config() -> Config:
    return Config()
