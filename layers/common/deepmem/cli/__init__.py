"""The `deepmem` command: the same services as the API, on the embedded default or the cloud."""

from deepmem.cli.app import main

__all__ = ["main"]
