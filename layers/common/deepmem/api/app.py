"""The HTTP API: routes under /v1/api/deep-memory, thin over `RunService`.

Routes are grouped in one router per Lambda function of template.yaml; `build_resolver` makes a
resolver from any of them. `app` holds every route: `deepmem serve` and the OpenAPI spec use it,
each function in `functions/` builds its own from its router.

Only light modules are imported here (no DeepLake, OpenAI or numpy): API functions cold-start
fast. The service is built from `deepmem.wiring` on first use; tests and the local server
substitute their own with `use_run_service`.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any
from uuid import UUID

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel

from deepmem.api.errors import NotAuthenticatedError, register_error_handlers
from deepmem.api.models import (
    OFFSET_MAX,
    PAGE_LIMIT_MAX,
    ErrorOut,
    JobAccepted,
    PairOut,
    PairPage,
    RunDeleted,
    RunOut,
    RunPage,
    RunReference,
    SettingsOut,
    SettingsUpdateRequest,
)
from deepmem.domain.errors import API_PREFIX
from deepmem.services.runs import RunExecution, RunService

logger = Logger()

API_TITLE = "deepmem"
API_VERSION = "1.0.0"

# The service

_service: RunService | None = None
_service_lock = threading.Lock()
#: The API function this process serves (set by `lambda_handler`); None for `deepmem serve`.
_function: str | None = None


def build_run_service() -> RunService:
    from deepmem import wiring
    from deepmem.config import require

    config = wiring.load_config()
    if _function is not None:
        require(config, _function)
    return wiring.build_run_service(config, wiring.shared_run_store(config))


def run_service() -> RunService:
    """The process-wide service, built once (a warm Lambda reuses its connections)."""
    global _service
    with _service_lock:
        if _service is None:
            _service = build_run_service()
        return _service


@contextmanager
def use_run_service(service: RunService) -> Iterator[RunService]:
    """Serve with `service` (fakes in tests, the embedded stack in `deepmem serve`)."""
    global _service
    with _service_lock:
        previous, _service = _service, service
    try:
        yield service
    finally:
        with _service_lock:
            _service = previous


def current_user_id(router: Router) -> UUID:
    """The caller, as the authorizer verified it; never read from a body."""
    raw = router.current_event.raw_event
    authorizer = (raw.get("requestContext") or {}).get("authorizer") or {}
    user_id = (authorizer.get("lambda") or {}).get("user_id")
    if not user_id:
        raise NotAuthenticatedError("no verified caller: the request did not pass the authorizer")
    try:
        return UUID(str(user_id))
    except ValueError:
        raise NotAuthenticatedError("the authorizer passed a malformed user id") from None


def log_started(message: str, started: RunExecution) -> None:
    """One line per state change the API causes, with the keys the workflow's logs carry."""
    logger.info(
        message,
        extra={
            "run_id": str(started.run.id),
            "attempt": started.run.attempt,
            "status": started.run.status.value,
            "execution": started.execution.name,
        },
    )


# OpenAPI documentation of the error answers (the bodies come from deepmem.api.errors)


def _responses(
    status: int, model: type[BaseModel], description: str, *errors: int
) -> dict[int, OpenAPIResponse]:
    """The success answer and the error answers a route can give (401/403/415/422/503: any)."""
    descriptions = {
        401: "no valid access token",
        403: "the caller is not an admin",
        404: "unknown training run",
        409: "the run's status does not allow it, or an unfinished run blocks it",
        415: "a request body that is not application/json",
        422: "invalid request",
        503: "the run store or the workflow engine failed",
    }
    answers: dict[int, OpenAPIResponse] = {
        status: {"description": description, "content": {"application/json": {"model": model}}}
    }
    for code in sorted({*errors, 401, 403, 415, 422, 503}):
        answers[code] = {
            "description": descriptions[code],
            "content": {"application/json": {"model": ErrorOut}},
        }
    return answers


RunIdPath = UUID
Limit = Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX, description="page size")]
Offset = Annotated[int, Query(ge=0, le=OFFSET_MAX, description="rows to skip")]

# runs: POST /generate, POST /train, GET /runs, GET /runs/{id}, GET /runs/{id}/pairs, cancel

runs_router = Router()


@runs_router.post(
    "/generate",
    status_code=202,
    summary="Start a generation run",
    responses=_responses(202, JobAccepted, "generation started", 409),
    tags=["runs"],
)
def generate() -> JobAccepted:
    started = run_service().start_generation(current_user_id(runs_router))
    log_started("generation started", started)
    return JobAccepted.of(started, "Generation started")


@runs_router.post(
    "/train",
    status_code=202,
    summary="Train on a generated run's pairs",
    responses=_responses(202, JobAccepted, "training started", 404, 409),
    tags=["runs"],
)
def train(body: Annotated[RunReference, Body()]) -> JobAccepted:
    started = run_service().start_training(body.training_run_id)
    log_started("training started", started)
    return JobAccepted.of(started, "Training started")


@runs_router.get(
    "/runs",
    summary="Runs, newest first",
    responses=_responses(200, RunPage, "a page of runs"),
    tags=["runs"],
)
def list_runs(limit: Limit = 50, offset: Offset = 0) -> RunPage:
    runs = run_service().list_runs(limit=limit, offset=offset)
    return RunPage(
        runs=[RunOut.of(run) for run in runs],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if len(runs) == limit else None,
    )


@runs_router.get(
    "/runs/<run_id>",
    summary="One run",
    responses=_responses(200, RunOut, "the run", 404),
    tags=["runs"],
)
def get_run(run_id: RunIdPath) -> RunOut:
    return RunOut.of(run_service().get_run(run_id))


@runs_router.get(
    "/runs/<run_id>/pairs",
    summary="A run's question-chunk pairs, for review",
    responses=_responses(200, PairPage, "a page of pairs", 404),
    tags=["runs"],
)
def list_pairs(run_id: RunIdPath, limit: Limit = 100, offset: Offset = 0) -> PairPage:
    pairs = run_service().list_pairs(run_id, limit=limit, offset=offset)
    return PairPage(
        training_run_id=run_id,
        pairs=[PairOut.of(pair) for pair in pairs],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if len(pairs) == limit else None,
    )


@runs_router.post(
    "/runs/<run_id>/cancel",
    status_code=202,
    summary="Stop an active run; it ends in its phase's failed status",
    responses=_responses(202, JobAccepted, "the execution was stopped", 404, 409),
    tags=["runs"],
)
def cancel(run_id: RunIdPath) -> JobAccepted:
    stopped = run_service().cancel(run_id)
    log_started("run cancelled", stopped)
    return JobAccepted.of(stopped, f"Cancelled: the run is now {stopped.run.status}")


# proceed: POST /proceed

proceed_router = Router()


@proceed_router.post(
    "/proceed",
    status_code=202,
    summary="Resume a failed run where it stopped, as a new attempt",
    responses=_responses(202, JobAccepted, "the next attempt started", 404, 409),
    tags=["runs"],
)
def proceed(body: Annotated[RunReference, Body()]) -> JobAccepted:
    started = run_service().proceed(body.training_run_id)
    log_started("run proceeded", started)
    run = started.run
    return JobAccepted.of(started, f"Proceeding: attempt {run.attempt} is {run.status}")


# delete: DELETE /runs/{id}

delete_router = Router()


@delete_router.delete(
    "/runs/<run_id>",
    summary="Delete a failed or generated run and its pairs",
    responses=_responses(200, RunDeleted, "the run and its pairs are deleted", 404, 409),
    tags=["runs"],
)
def delete_run(run_id: RunIdPath) -> RunDeleted:
    deleted = run_service().delete(run_id)
    logger.info(
        "run deleted", extra={"run_id": str(run_id), "deleted_pairs": deleted.deleted_pairs}
    )
    return RunDeleted.of(deleted)


# settings: GET /settings, PUT /settings

settings_router = Router()


@settings_router.get(
    "/settings",
    summary="The settings and what blocks a new run",
    responses=_responses(200, SettingsOut, "the settings"),
    tags=["settings"],
)
def get_settings() -> SettingsOut:
    return SettingsOut.of(run_service().get_settings_view())


@settings_router.put(
    "/settings",
    summary="Change settings (refused while a run is generating or training)",
    responses=_responses(200, SettingsOut, "the settings now in force", 409),
    tags=["settings"],
)
def put_settings(body: Annotated[SettingsUpdateRequest, Body()]) -> SettingsOut:
    return SettingsOut.of(run_service().update_settings(body.to_domain()))


ALL_ROUTERS = (runs_router, proceed_router, delete_router, settings_router)


class JsonApiResolver(APIGatewayHttpResolver):
    """Refuses request bodies that are not JSON (415) before Powertools would parse them as a
    form or multipart, which this API never accepts."""

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        refused = refuse_non_json_body(event)
        return refused if refused is not None else super().resolve(event, context)


def refuse_non_json_body(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """415: not JSON's media type; 422: what JSON cannot parse (Powertools would answer 500)."""
    body = event.get("body")
    if not body:
        return None
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    media_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        return _json_answer(415, "send request bodies as Content-Type: application/json")
    try:
        text = base64.b64decode(str(body)).decode() if event.get("isBase64Encoded") else str(body)
        json.loads(text)
    except (ValueError, RecursionError) as exc:  # not UTF-8, malformed, too deep, too long
        return _json_answer(422, f"the request body is not JSON that can be parsed: {exc!r:.120}")
    return None


def _json_answer(status: int, detail: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"detail": detail}),
        "isBase64Encoded": False,
    }


def build_resolver(*routers: Router) -> APIGatewayHttpResolver:
    resolver = JsonApiResolver(enable_validation=True)
    register_error_handlers(resolver)
    for router in routers:
        resolver.include_router(router, prefix=API_PREFIX)
    return resolver


def openapi_json(resolver: APIGatewayHttpResolver | None = None) -> str:
    # Powertools' OpenAPI models (~0.25 s to import) are for the spec only, never a request.
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

    return (resolver or app).get_openapi_json_schema(
        title=API_TITLE,
        version=API_VERSION,
        description=(
            "Synthetic question-chunk pairs, Deep Memory or a query adapter trained on them, "
            "with recoverable runs. Every route needs a Supabase access token of an admin."
        ),
        security_schemes={"supabase": HTTPBearer(bearerFormat="JWT")},
        security=[{"supabase": []}],
    )


app = build_resolver(*ALL_ROUTERS)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)


def lambda_handler(
    function: str, *routers: Router
) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The Lambda entry point of API function `function` (`functions/<function>/`): its routes
    behind Powertools' decorator stack (tracing, the request's correlation id on every log
    line, metrics per status class). The service it builds on first use checks the
    configuration the function needs (`deepmem.config.FUNCTION_NEEDS`)."""
    global _function
    _function = function
    from aws_lambda_powertools import Metrics, Tracer
    from aws_lambda_powertools.logging import correlation_paths
    from aws_lambda_powertools.metrics import MetricUnit

    from deepmem.config import traced_clients

    logger = Logger()
    tracer = Tracer(patch_modules=traced_clients(function))
    metrics = Metrics()
    resolver = build_resolver(*routers)

    @tracer.capture_lambda_handler
    @logger.inject_lambda_context(
        correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True
    )
    @metrics.log_metrics(capture_cold_start_metric=True)
    def entry(event: dict[str, Any], context: Any) -> dict[str, Any]:
        response = resolver.resolve(event, context)
        metrics.add_metric(
            name=f"Responses{response['statusCode'] // 100}xx", unit=MetricUnit.Count, value=1
        )
        return response

    return entry
