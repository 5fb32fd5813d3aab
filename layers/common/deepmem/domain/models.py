"""Domain models: a run, a pair, a batch of processed chunks, the settings."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from deepmem.domain.datasets import is_cloud_dataset
from deepmem.domain.status import RunStatus

ModelName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^\S+$")
]


class TrainerKind(StrEnum):
    AUTO = "auto"  # Deep Memory for hub:// datasets, the feedback adapter otherwise
    DEEP_MEMORY = "deep_memory"
    QUERY_ADAPTER = "query_adapter"  # a learned linear map of the query embedding
    FEEDBACK_ADAPTER = "feedback_adapter"  # that map cross-fitted and averaged, plus feedback


class TrainingRun(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: UUID
    dataset: str
    status: RunStatus
    user_id: UUID | None = None
    deeplake_job_id: str | None = None
    error_message: str | None = None
    total_chunks: int = 0
    processed_chunks: int = 0
    pair_count: int = 0
    attempt: int = 1
    llm_calls: int = 0
    tokens_used: int = 0
    rejected_chunks: int = 0
    failed_chunk_streak: int = 0
    dataset_fingerprint: str | None = None
    generator: str | None = None
    llm_model: str | None = None
    embedding_model: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    estimate: dict[str, Any] | None = Field(
        default=None, description="the plan's forecast (`deepmem.domain.handover.RunEstimate`)"
    )
    created_at: datetime
    updated_at: datetime

    @property
    def is_cloud(self) -> bool:
        return is_cloud_dataset(self.dataset)


class TrainingPair(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    run_id: UUID
    chunk_id: str
    question: str
    created_at: datetime


class ChunkQuestions(BaseModel):
    """What one chunk yielded: zero or more questions. Zero still marks the chunk processed."""

    model_config = ConfigDict(frozen=True)

    chunk_id: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    questions: list[Annotated[str, StringConstraints(min_length=1, max_length=2000)]] = Field(
        default_factory=list
    )


class BatchRecord(BaseModel):
    """One batch of processed chunks, written in one transaction."""

    model_config = ConfigDict(frozen=True)

    run_id: UUID
    attempt: int = Field(ge=1, description="the worker's attempt: refused at any other")
    chunks: list[ChunkQuestions]
    llm_calls: int = Field(default=0, ge=0)
    tokens_used: int = Field(default=0, ge=0)
    look_up: list[str] = Field(
        default_factory=list,
        description="chunk ids to report on: which of them the run has processed, once "
        "this batch is written (a lane's next batch, asked in the same round trip)",
    )


class BatchOutcome(BaseModel):
    """What recording a batch changed: only chunks not processed before count."""

    model_config = ConfigDict(frozen=True)

    new_chunks: int
    new_pairs: int
    run: TrainingRun
    processed: frozenset[str] = Field(
        default_factory=frozenset, description="the ids of `look_up` the run has processed"
    )
    stop: bool = Field(
        default=False,
        description="the run failed in this attempt (a cancel): the batch was recorded, and "
        "the worker must start nothing more",
    )


class DeleteOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    training_run_id: UUID
    deleted_pairs: int


class Settings(BaseModel):
    """The admin-editable knobs of generation and training, one row in the database."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    questions_per_chunk: int = Field(default=3, ge=1, le=10)
    llm_model: ModelName = "gpt-4o-mini"
    embedding_model: ModelName = "text-embedding-3-small"
    batch_size: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="chunks read, and answers recorded, per transaction of a lane",
    )
    concurrency: int = Field(default=16, ge=1, le=128, description="LLM calls in flight per lane")
    lanes: int = Field(default=2, ge=1, le=40, description="parallel workers of the Map state")
    max_chunks_per_run: int | None = Field(
        default=None, ge=1, le=10_000_000, description="cap on chunks per run; None = all"
    )
    trainer: TrainerKind = TrainerKind.AUTO


class SettingsUpdate(BaseModel):
    """A partial change to the settings; every field optional, none unknown."""

    model_config = ConfigDict(extra="forbid")

    questions_per_chunk: int | None = Field(default=None, ge=1, le=10)
    llm_model: ModelName | None = None
    embedding_model: ModelName | None = None
    batch_size: int | None = Field(default=None, ge=1, le=1000)
    concurrency: int | None = Field(default=None, ge=1, le=128)
    lanes: int | None = Field(default=None, ge=1, le=40)
    max_chunks_per_run: int | None = Field(default=None, ge=1, le=10_000_000)
    trainer: TrainerKind | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> SettingsUpdate:
        if not self.model_fields_set:
            raise ValueError("no setting given to change")
        return self

    def apply_to(self, settings: Settings) -> Settings:
        return Settings.model_validate(settings.model_dump() | self.model_dump(exclude_unset=True))
