"""The one composition root: the only module that knows which adapter implements which port.

Each builder imports its adapter lazily, so an API function never imports DeepLake, OpenAI or
numpy on a cold start.
"""

from __future__ import annotations

from deepmem.config import Config, load_config

__all__ = ["Config", "load_config"]
