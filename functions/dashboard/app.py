"""Lambda `dashboard`: the admin page's static files and its configuration (no token needed:
the page holds no data and calls the API with the admin's own token)."""

from typing import Any

from deepmem.config import load_config
from deepmem.dashboard.site import handle_event


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle_event(event, load_config())
