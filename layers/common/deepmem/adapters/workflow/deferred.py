"""A workflow built on its first use.

The API serves five functions from one service; only the routes that start, stop or describe
an execution need the workflow. Building it lazily keeps the others from creating a Step
Functions client (or, outside Lambda, the local moto workflow) they never call, and lets the
settings and delete functions run without `STATE_MACHINE_ARN` at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from uuid import UUID

from deepmem.domain.status import Phase
from deepmem.ports import Execution, Workflow


class DeferredWorkflow:
    """`Workflow` that calls `build` once, on the first start, stop or describe."""

    def __init__(self, build: Callable[[], Workflow]) -> None:
        self._build = build
        self._workflow: Workflow | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._workflow is not None

    def _target(self) -> Workflow:
        with self._lock:
            if self._workflow is None:
                self._workflow = self._build()
            return self._workflow

    def start(self, run_id: UUID, phase: Phase, attempt: int) -> Execution:
        return self._target().start(run_id, phase, attempt)

    def stop(self, run_id: UUID, phase: Phase, attempt: int, cause: str) -> None:
        self._target().stop(run_id, phase, attempt, cause)

    def describe(self, run_id: UUID, phase: Phase, attempt: int) -> Execution | None:
        return self._target().describe(run_id, phase, attempt)
