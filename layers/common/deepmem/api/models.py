"""Request and response models of the HTTP API. Domain models stay out of the wire format."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from deepmem.domain.models import (
    DeleteOutcome,
    SettingsUpdate,
    TrainerKind,
    TrainingPair,
    TrainingRun,
)
from deepmem.domain.status import RunStatus
from deepmem.services.runs import RunExecution, SettingsView

# requests

#: Paging bounds of every list (GET /runs, GET /runs/{id}/pairs, and the CLI's runs and pairs).
PAGE_LIMIT_MAX = 500
OFFSET_MAX = 10_000_000


class RunReference(BaseModel):
    """Body of POST /train and POST /proceed. Unknown fields (a `user_id` included) are ignored:
    who acts comes from the verified token only."""

    model_config = ConfigDict(extra="ignore")

    training_run_id: UUID


# Model names as providers spell them ("gpt-4o-mini", "org/model:tag"). ASCII only, so the
# published JSON Schema pattern means the same to every client as to pydantic (`\S` does not:
# Python counts U+0085 as whitespace, JSON Schema's ECMA regex does not).
RequestModelName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"),
]


#: Settings that are integers: JSON numbers only (pydantic alone would take `true` or `"3"`).
INTEGER_SETTINGS = (
    "questions_per_chunk",
    "batch_size",
    "concurrency",
    "lanes",
    "max_chunks_per_run",
)

#: The one setting whose null means something (no cap); null elsewhere is refused.
NULLABLE_SETTINGS = frozenset({"max_chunks_per_run"})


def _null_only_where_meaningful(schema: dict[str, Any]) -> None:
    schema["minProperties"] = 1
    for name, prop in schema.get("properties", {}).items():
        options = prop.get("anyOf")
        if name in NULLABLE_SETTINGS or not options:
            continue
        rest = [option for option in options if option != {"type": "null"}]
        prop.pop("anyOf")
        prop.pop("default", None)
        if len(rest) == 1:
            prop.update(rest[0])
        else:
            prop["anyOf"] = rest


class SettingsUpdateRequest(SettingsUpdate):
    """Body of PUT /settings and of `deepmem settings --set`: the fields to change, nothing
    else. `null` only removes the cap on chunks per run; the published schema says exactly that.
    A number is a JSON number: `true` and `"3"` are refused, never stored as 1 or 3 (`3.0` is
    an integer to JSON Schema, and is taken as 3)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_null_only_where_meaningful)

    llm_model: RequestModelName | None = None
    embedding_model: RequestModelName | None = None

    @model_validator(mode="before")
    @classmethod
    def _ignore_user_id(cls, data: Any) -> Any:
        # The caller's identity never comes from a body; drop it rather than refuse the request.
        if isinstance(data, dict) and "user_id" in data:
            return {k: v for k, v in data.items() if k != "user_id"}
        return data

    @field_validator(
        "questions_per_chunk",
        "llm_model",
        "embedding_model",
        "batch_size",
        "concurrency",
        "lanes",
        "trainer",
        mode="before",
    )
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("null is not a value of this setting: leave it out to keep it")
        return value

    @field_validator(*INTEGER_SETTINGS, mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        if isinstance(value, bool | str):
            raise ValueError("a number is expected, not a boolean or a string")
        return value

    def to_domain(self) -> SettingsUpdate:
        return SettingsUpdate.model_validate(self.model_dump(exclude_unset=True))


# responses


class JobAccepted(BaseModel):
    """202 for generate, train, proceed and cancel."""

    job_id: str = Field(description="the Step Functions execution name: <run>-<phase>-<attempt>")
    training_run_id: UUID
    message: str

    @classmethod
    def of(cls, started: RunExecution, message: str) -> JobAccepted:
        return cls(job_id=started.execution.name, training_run_id=started.run.id, message=message)


class RunOut(BaseModel):
    id: UUID
    dataset: str
    status: RunStatus
    user_id: UUID | None
    deeplake_job_id: str | None
    error_message: str | None
    total_chunks: int
    processed_chunks: int
    pair_count: int
    attempt: int
    llm_calls: int
    tokens_used: int
    rejected_chunks: int = Field(
        description="processed chunks whose answer held no usable question (a proceed asks "
        "about them again)"
    )
    failed_chunk_streak: int = Field(
        description="chunks failed in a row after their retries; at DEEPMEM_MAX_FAILED_CHUNKS "
        "the generation stops"
    )
    dataset_fingerprint: str | None = Field(
        description="digest of the dataset's chunk ids and version when the run was planned"
    )
    generator: str | None = Field(description="what produced the pairs: openai or offline")
    llm_model: str | None
    embedding_model: str | None
    metrics: dict[str, Any] = Field(
        description="what training measured; `applied` (true, false, or null when the trainer "
        "cannot tell) and `guard`: recall@1/5/10 and nDCG@10 on held-out generated questions "
        "`before` (base) and `after`, the `previous` active adapter's, the intervals and the "
        "`reason`"
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, run: TrainingRun) -> RunOut:
        return cls.model_validate(run.model_dump())


class RunPage(BaseModel):
    runs: list[RunOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last page")


class PairOut(BaseModel):
    id: int
    chunk_id: str
    question: str
    created_at: datetime

    @classmethod
    def of(cls, pair: TrainingPair) -> PairOut:
        return cls(
            id=pair.id, chunk_id=pair.chunk_id, question=pair.question, created_at=pair.created_at
        )


class PairPage(BaseModel):
    training_run_id: UUID
    pairs: list[PairOut]
    limit: int
    offset: int
    next_offset: int | None


class RunDeleted(BaseModel):
    training_run_id: UUID
    deleted_pairs: int

    @classmethod
    def of(cls, outcome: DeleteOutcome) -> RunDeleted:
        return cls(training_run_id=outcome.training_run_id, deleted_pairs=outcome.deleted_pairs)


class GeneratorOut(BaseModel):
    kind: str = Field(description="openai (any OpenAI-compatible endpoint) or offline")
    model: str | None
    endpoint: str | None


class SettingsOut(BaseModel):
    questions_per_chunk: int
    llm_model: str
    embedding_model: str
    batch_size: int
    concurrency: int
    lanes: int
    max_chunks_per_run: int | None
    trainer: TrainerKind
    has_blocking_run: bool
    blocking_run_id: UUID | None
    blocking_run_status: RunStatus | None
    is_cloud: bool
    effective_trainer: TrainerKind | None = Field(
        description="the trainer the next training will use; null when the `trainer` setting "
        "cannot be honoured on this dataset"
    )
    generator: GeneratorOut | None = Field(
        description="the generator the next generation will use; null when none can run "
        "(`generator_problem` says why)"
    )
    generator_problem: str | None
    embedding_model_in_use: str = Field(
        description="the model that embeds questions and queries: the dataset's own when it "
        "records one, else the `embedding_model` setting"
    )
    embedding_model_source: str = Field(description="dataset, run or settings")

    @classmethod
    def of(cls, view: SettingsView) -> SettingsOut:
        return cls.model_validate(
            view.settings.model_dump() | view.model_dump(exclude={"settings"})
        )


class ErrorOut(BaseModel):
    """Every error body: `detail` always (a message, or the list of invalid fields on a 422);
    the blocking run on a 409 that has one; the run and its status on a refused move."""

    detail: Any
    blocking_run_id: UUID | None = None
    blocking_run_status: RunStatus | None = None
    training_run_id: UUID | None = None
    status: RunStatus | None = None
