"""Lambda `runs`: the HTTP API's runs routes, a thin handler over `deepmem.api`."""

from deepmem.api.app import lambda_handler, runs_router

handler = lambda_handler("runs", runs_router)
