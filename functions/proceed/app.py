"""Lambda `proceed`: the HTTP API's proceed routes, a thin handler over `deepmem.api`."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from deepmem.api.app import build_resolver, proceed_router

logger = Logger(service="deepmem-api")
tracer = Tracer(service="deepmem-api")
metrics = Metrics(service="deepmem-api")
app = build_resolver(proceed_router)


@tracer.capture_lambda_handler
@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True
)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = app.resolve(event, context)
    metrics.add_metric(
        name=f"Responses{response['statusCode'] // 100}xx", unit=MetricUnit.Count, value=1
    )
    return response
