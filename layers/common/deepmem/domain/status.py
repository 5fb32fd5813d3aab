"""The run lifecycle as data, so the services and the SQL agree on one table."""

from enum import StrEnum


class RunStatus(StrEnum):
    GENERATING = "generating"
    GENERATED = "generated"
    TRAINING = "training"
    COMPLETED = "completed"
    GENERATING_FAILED = "generating_failed"
    TRAINING_FAILED = "training_failed"


class Phase(StrEnum):
    GENERATING = "generating"
    TRAINING = "training"


TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.GENERATING: frozenset({RunStatus.GENERATED, RunStatus.GENERATING_FAILED}),
    RunStatus.GENERATED: frozenset({RunStatus.TRAINING}),
    RunStatus.TRAINING: frozenset({RunStatus.COMPLETED, RunStatus.TRAINING_FAILED}),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.GENERATING_FAILED: frozenset({RunStatus.GENERATING}),
    RunStatus.TRAINING_FAILED: frozenset({RunStatus.TRAINING}),
}

#: Every status but `completed` keeps a new generation from starting.
BLOCKING_STATUSES: frozenset[RunStatus] = frozenset(
    s for s in RunStatus if s != RunStatus.COMPLETED
)

#: A failed run is proceeded back into the phase it failed in.
PROCEED_TARGETS: dict[RunStatus, RunStatus] = {
    RunStatus.GENERATING_FAILED: RunStatus.GENERATING,
    RunStatus.TRAINING_FAILED: RunStatus.TRAINING,
}

DELETABLE_STATUSES: frozenset[RunStatus] = frozenset(
    {RunStatus.GENERATING_FAILED, RunStatus.TRAINING_FAILED, RunStatus.GENERATED}
)

ACTIVE_STATUSES: frozenset[RunStatus] = frozenset({RunStatus.GENERATING, RunStatus.TRAINING})

_FAILED_STATUS: dict[Phase, RunStatus] = {
    Phase.GENERATING: RunStatus.GENERATING_FAILED,
    Phase.TRAINING: RunStatus.TRAINING_FAILED,
}
_ACTIVE_STATUS: dict[Phase, RunStatus] = {
    Phase.GENERATING: RunStatus.GENERATING,
    Phase.TRAINING: RunStatus.TRAINING,
}


_DONE_STATUS: dict[Phase, RunStatus] = {
    Phase.GENERATING: RunStatus.GENERATED,
    Phase.TRAINING: RunStatus.COMPLETED,
}

#: What a cancelled run (or an aborted execution) keeps as its error; the API promises this text.
CANCELLED_MESSAGE = "cancelled"


def can_transition(current: RunStatus, target: RunStatus) -> bool:
    return target in TRANSITIONS[current]


def failed_status(phase: Phase) -> RunStatus:
    return _FAILED_STATUS[phase]


def active_status(phase: Phase) -> RunStatus:
    return _ACTIVE_STATUS[phase]


def done_status(phase: Phase) -> RunStatus:
    """Where a phase that succeeded leaves its run."""
    return _DONE_STATUS[phase]


def phase_of(status: RunStatus) -> Phase | None:
    """The phase an active or failed status belongs to; `generated` and `completed` have none."""
    for phase in Phase:
        if status in (_ACTIVE_STATUS[phase], _FAILED_STATUS[phase]):
            return phase
    return None
