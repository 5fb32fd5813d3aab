"""Execution names: deterministic from (run, phase, attempt), so a duplicate start is refused
by the workflow engine itself, and a status-change event names the run it belongs to."""

from __future__ import annotations

import re
from uuid import UUID

from deepmem.domain.errors import NotOurExecutionError
from deepmem.domain.status import Phase

_EXECUTION_NAME = re.compile(
    r"^(?P<run_id>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"-(?P<phase>[a-z]+)-(?P<attempt>[0-9]+)$"
)


def execution_name(run_id: UUID, phase: Phase, attempt: int) -> str:
    """`<run>-<phase>-<attempt>`."""
    return f"{run_id}-{phase.value}-{attempt}"


def parse_execution_name(name: str) -> tuple[UUID, Phase, int]:
    """Invert `execution_name`; NotOurExecutionError for any other name."""
    match = _EXECUTION_NAME.match(name)
    if match is None:
        raise NotOurExecutionError(f"execution name {name!r} is not <run>-<phase>-<attempt>")
    try:
        phase = Phase(match["phase"])
    except ValueError:
        raise NotOurExecutionError(f"execution name {name!r} has an unknown phase") from None
    return UUID(match["run_id"]), phase, int(match["attempt"])
