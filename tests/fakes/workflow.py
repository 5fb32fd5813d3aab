"""A Workflow fake that behaves like Step Functions on names: one execution per name."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from uuid import UUID

from deepmem.domain.errors import WorkflowError
from deepmem.domain.executions import execution_name
from deepmem.domain.status import Phase
from deepmem.ports import Execution, ExecutionState


@dataclass(frozen=True)
class Stop:
    name: str
    cause: str


class FakeWorkflow:
    """Implements `deepmem.ports.Workflow`; records every start and stop, thread-safe.

    `fail_starts` makes every start raise WorkflowError (the engine refusing), to check that a
    run never stays stuck when its execution could not be started.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.executions: dict[str, Execution] = {}
        self.start_calls: list[str] = []
        self.stops: list[Stop] = []
        self.fail_starts = False

    def start(self, run_id: UUID, phase: Phase, attempt: int) -> Execution:
        name = execution_name(run_id, phase, attempt)
        with self._lock:
            self.start_calls.append(name)
            if self.fail_starts:
                raise WorkflowError(f"execution {name} could not be started (fake refusal)")
            existing = self.executions.get(name)
            if existing is not None:
                return existing
            execution = Execution(
                name=name,
                arn=f"arn:aws:states:us-east-1:000000000000:execution:deepmem:{name}",
                state=ExecutionState.RUNNING,
            )
            self.executions[name] = execution
            return execution

    def stop(self, run_id: UUID, phase: Phase, attempt: int, cause: str) -> None:
        name = execution_name(run_id, phase, attempt)
        with self._lock:
            execution = self.executions.get(name)
            if execution is None:
                raise WorkflowError(f"execution {name} does not exist")
            self.stops.append(Stop(name=name, cause=cause))
            if execution.state is ExecutionState.RUNNING:
                self.executions[name] = replace(
                    execution, state=ExecutionState.ABORTED, cause=cause
                )

    def describe(self, run_id: UUID, phase: Phase, attempt: int) -> Execution | None:
        with self._lock:
            return self.executions.get(execution_name(run_id, phase, attempt))

    @property
    def started(self) -> list[str]:
        """Names of the executions that exist (a refused duplicate adds nothing)."""
        with self._lock:
            return list(self.executions)
