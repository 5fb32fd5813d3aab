"""The one composition root: the only module that knows which adapter implements which port.

Each builder imports its adapter lazily, so an API function never imports DeepLake, OpenAI or
numpy on a cold start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepmem.config import Config, load_config

if TYPE_CHECKING:
    from deepmem.ports import RunStore, Workflow

__all__ = ["Config", "build_run_store", "build_workflow", "load_config"]


def build_run_store(config: Config) -> RunStore:
    """Stub until the store adapters are wired (PostgreSQL, Supabase)."""
    raise NotImplementedError("no RunStore adapter is wired yet")


def build_workflow(config: Config) -> Workflow:
    """Stub until the workflow adapters are wired (Step Functions, local)."""
    raise NotImplementedError("no Workflow adapter is wired yet")
