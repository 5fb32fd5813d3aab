"""Lambda `proceed`: the HTTP API's proceed routes, a thin handler over `deepmem.api`."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from deepmem.api.app import build_resolver, proceed_router

logger = Logger(service="deepmem-api")
app = build_resolver(proceed_router)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
