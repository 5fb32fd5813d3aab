"""Lambda `delete`: the HTTP API's delete routes, a thin handler over `deepmem.api`."""

from deepmem.api.app import delete_router, lambda_handler

handler = lambda_handler("delete", delete_router)
