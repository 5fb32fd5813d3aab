"""The one place that maps errors to HTTP answers. Every body is JSON with `detail`.

Mapped by type, never by message: 404 unknown run; 409 a move the lifecycle forbids, a blocking
run (with `blocking_run_id`/`blocking_run_status`), locked settings, a resume over another
dataset or generator, settings the dataset cannot honour, no generator configured, no dataset;
422 invalid input (a value the store cannot hold included); 401 no verified caller; 415 a
body that is not JSON; 503 the store or the workflow engine failing; 500 anything else.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

from deepmem.domain.errors import (
    BlockingRunExistsError,
    DatasetMissingError,
    DeepmemError,
    GeneratorNotConfiguredError,
    InvalidDataError,
    InvalidSettingsError,
    InvalidTransitionError,
    RunNotFoundError,
    RunSourceChangedError,
    SettingsLockedError,
    StoreError,
    UnfinishableRunError,
    WorkflowError,
)

logger = Logger()


class NotAuthenticatedError(DeepmemError):
    """The request reached a handler without a verified caller (no authorizer context)."""


def error_response(http_status: HTTPStatus, /, detail: Any, **fields: Any) -> Response[Any]:
    return Response(
        status_code=http_status.value,
        content_type=content_types.APPLICATION_JSON,
        body={"detail": detail, **fields},
    )


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Location, type and pydantic's short message; never the input echoed back or internals.
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "type": str(error.get("type", "")),
            "msg": str(error.get("msg", "")),
        }
        for error in exc.errors()
    ]


def register_error_handlers(app: ApiGatewayResolver) -> None:
    @app.exception_handler(RequestValidationError)
    def _invalid_request(exc: RequestValidationError) -> Response[Any]:
        return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, _validation_detail(exc))

    @app.exception_handler([InvalidSettingsError, GeneratorNotConfiguredError, DatasetMissingError])
    def _invalid_settings(exc: DeepmemError) -> Response[Any]:
        # Well-formed, but at odds with this deployment (its dataset, its generator): a
        # conflict, not bad input; the message says what to configure.
        return error_response(HTTPStatus.CONFLICT, str(exc))

    @app.exception_handler(InvalidDataError)
    def _invalid_data(exc: InvalidDataError) -> Response[Any]:
        return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc))

    @app.exception_handler(UnfinishableRunError)
    def _unfinishable(exc: UnfinishableRunError) -> Response[Any]:
        # Well-formed settings under which the largest run they allow could never finish.
        estimate = exc.estimate.model_dump(mode="json") if exc.estimate is not None else None
        return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc), estimate=estimate)

    @app.exception_handler(RequestUnsupportedContentType)
    def _unsupported_media_type(exc: RequestUnsupportedContentType) -> Response[Any]:
        return error_response(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "request bodies must be application/json"
        )

    @app.exception_handler(NotFoundError)
    def _no_route(exc: NotFoundError) -> Response[Any]:
        return error_response(HTTPStatus.NOT_FOUND, "Not found")

    @app.exception_handler(ServiceError)
    def _http_error(exc: ServiceError) -> Response[Any]:
        return error_response(HTTPStatus(exc.status_code), exc.msg)

    @app.exception_handler(NotAuthenticatedError)
    def _not_authenticated(exc: NotAuthenticatedError) -> Response[Any]:
        return error_response(HTTPStatus.UNAUTHORIZED, str(exc))

    @app.exception_handler(RunNotFoundError)
    def _run_not_found(exc: RunNotFoundError) -> Response[Any]:
        return error_response(HTTPStatus.NOT_FOUND, str(exc), training_run_id=exc.run_id)

    @app.exception_handler([BlockingRunExistsError, SettingsLockedError, RunSourceChangedError])
    def _blocked_by_a_run(
        exc: BlockingRunExistsError | SettingsLockedError | RunSourceChangedError,
    ) -> Response[Any]:
        return error_response(
            HTTPStatus.CONFLICT,
            str(exc),
            blocking_run_id=exc.blocking_run_id,
            blocking_run_status=exc.blocking_run_status,
        )

    @app.exception_handler(InvalidTransitionError)
    def _invalid_transition(exc: InvalidTransitionError) -> Response[Any]:
        # Covers RunNotDeletableError, RunNotProceedableError, RunNotCancellableError and
        # StaleWorkerError (a worker's write at an attempt the run has left): 409.
        return error_response(
            HTTPStatus.CONFLICT, str(exc), training_run_id=exc.run_id, status=exc.current
        )

    @app.exception_handler([StoreError, WorkflowError])
    def _unavailable(exc: Exception) -> Response[Any]:
        logger.exception("dependency failed")
        return error_response(HTTPStatus.SERVICE_UNAVAILABLE, str(exc))

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response[Any]:
        logger.exception("unhandled error")
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
