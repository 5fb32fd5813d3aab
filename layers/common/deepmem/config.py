"""Configuration from the environment, read once at the edge (a handler, the CLI)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Config(BaseSettings):
    """Every knob that is not an admin setting. Unset parts fall back to the embedded default."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    home: Path = Field(default=Path(".deepmem"), alias="DEEPMEM_HOME")
    dataset: str = Field(
        default="",
        alias="DEEPMEM_DATASET",
        description="DeepLake path; empty means <home>/dataset (the embedded default)",
    )
    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    supabase_url: str | None = Field(default=None, alias="SUPABASE_URL")
    supabase_service_key: str | None = Field(default=None, alias="SUPABASE_SERVICE_KEY")
    supabase_service_key_secret: str | None = Field(
        default=None, alias="SUPABASE_SERVICE_KEY_SECRET", description="Secrets Manager name/ARN"
    )
    openai_api_key: str | None = Field(default=None, alias="OPENAI_API_KEY")
    openai_api_key_secret: str | None = Field(default=None, alias="OPENAI_API_KEY_SECRET")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    llm_timeout_seconds: float = Field(default=60.0, gt=0, alias="DEEPMEM_LLM_TIMEOUT")
    llm_max_retries: int = Field(default=6, ge=0, le=20, alias="DEEPMEM_LLM_MAX_RETRIES")
    activeloop_token: str | None = Field(default=None, alias="ACTIVELOOP_TOKEN")
    activeloop_token_secret: str | None = Field(default=None, alias="ACTIVELOOP_TOKEN_SECRET")
    activeloop_api_url: str = Field(
        default="https://app.activeloop.ai", alias="DEEPMEM_ACTIVELOOP_API_URL"
    )
    state_machine_arn: str | None = Field(default=None, alias="STATE_MACHINE_ARN")
    artifacts: str = Field(
        default="",
        alias="DEEPMEM_ARTIFACTS",
        description="s3://bucket/prefix or a folder; empty means <home>/artifacts",
    )

    @property
    def dataset_path(self) -> str:
        return self.dataset or str(self.home / "dataset")

    @property
    def artifacts_location(self) -> str:
        return self.artifacts or str(self.home / "artifacts")


@lru_cache(maxsize=1)
def load_config() -> Config:
    return Config()
