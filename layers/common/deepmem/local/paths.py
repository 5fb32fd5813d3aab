"""Where the checkout's own files are: the local room runs the repository's functions, ASL and
migrations, never copies of them."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The checkout this package runs from (`layers/common/deepmem/local/` is four levels
    down), or DEEPMEM_REPO_ROOT."""
    override = os.environ.get("DEEPMEM_REPO_ROOT")
    return Path(override) if override else Path(__file__).resolve().parents[4]
