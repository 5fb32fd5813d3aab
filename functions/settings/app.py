"""Lambda `settings`: the HTTP API's settings routes, a thin handler over `deepmem.api`."""

from deepmem.api.app import lambda_handler, settings_router

handler = lambda_handler("settings", settings_router)
