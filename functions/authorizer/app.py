"""Lambda `authorizer`: HTTP API Lambda authorizer (payload 2.0, simple responses).

Admits admins holding a valid Supabase access token and passes their user id on as
`requestContext.authorizer.lambda.user_id`. A denial carries its reason in the logs (API
Gateway answers every denial with 403; see `deepmem.api.auth`).
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from deepmem.api.auth import TokenVerifier, bearer_token, require_issuer, settings_from_config
from deepmem.config import load_config, traced_clients

# At init, without I/O: a JWKS url with no issuer fails the function's start, loudly.
require_issuer(load_config())

logger = Logger()
tracer = Tracer(patch_modules=traced_clients("authorizer"))
metrics = Metrics()
_verifier: TokenVerifier | None = None


def verifier() -> TokenVerifier:
    """Built once per process, so the JWKS and the secret are fetched once per warm instance."""
    global _verifier
    if _verifier is None:
        _verifier = TokenVerifier(settings_from_config(load_config()))
    return _verifier


@tracer.capture_lambda_handler
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    decision = verifier().authorize(bearer_token(event))
    if decision.allowed:
        logger.info("allowed", extra={"user_id": decision.user_id})
        metrics.add_metric(name="Allowed", unit=MetricUnit.Count, value=1)
    else:
        # The reason is logged, never returned to the caller beyond its kind.
        logger.info("denied", extra={"denial": decision.denial, "reason": decision.reason})
        metrics.add_metric(name="Denied", unit=MetricUnit.Count, value=1)
    return decision.to_simple_response()
