"""Execution names: deterministic from (run, phase, attempt), so a duplicate start is refused
by the workflow engine itself, and a status-change event names the run it belongs to.

A generation that hands over (`deepmem.domain.handover`) continues in executions named
`<run>-<phase>-<attempt>-<n>`, n = 1, 2, ...: the segment, also deterministic, so a retried
handover cannot start a second successor."""

from __future__ import annotations

import re
from uuid import UUID

from deepmem.domain.errors import NotOurExecutionError
from deepmem.domain.status import Phase

_EXECUTION_NAME = re.compile(
    r"^(?P<run_id>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"-(?P<phase>[a-z]+)-(?P<attempt>[0-9]+)(?:-(?P<segment>[1-9][0-9]*))?$"
)


def execution_name(run_id: UUID, phase: Phase, attempt: int, segment: int = 0) -> str:
    """`<run>-<phase>-<attempt>`, and `-<segment>` for the executions a handover starts."""
    base = f"{run_id}-{phase.value}-{attempt}"
    return f"{base}-{segment}" if segment else base


def execution_segment(name: str) -> int:
    """The segment of an execution named by `execution_name` (0 for the first)."""
    match = _EXECUTION_NAME.match(name)
    if match is None:
        raise NotOurExecutionError(f"execution name {name!r} is not <run>-<phase>-<attempt>")
    return int(match["segment"] or 0)


def parse_execution_name(name: str) -> tuple[UUID, Phase, int]:
    """Invert `execution_name` (any segment); NotOurExecutionError for any other name."""
    match = _EXECUTION_NAME.match(name)
    if match is None:
        raise NotOurExecutionError(f"execution name {name!r} is not <run>-<phase>-<attempt>")
    try:
        phase = Phase(match["phase"])
    except ValueError:
        raise NotOurExecutionError(f"execution name {name!r} has an unknown phase") from None
    return UUID(match["run_id"]), phase, int(match["attempt"])
