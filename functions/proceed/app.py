"""Lambda `proceed`: the HTTP API's proceed routes, a thin handler over `deepmem.api`."""

from deepmem.api.app import lambda_handler, proceed_router

handler = lambda_handler("proceed", proceed_router)
