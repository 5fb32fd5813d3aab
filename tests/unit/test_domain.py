"""The lifecycle table and the models, without I/O."""

from __future__ import annotations

import pytest
from deepmem.domain.chunks import Lane, split_into_lanes
from deepmem.domain.models import BatchRecord, Settings, SettingsUpdate
from deepmem.domain.status import (
    BLOCKING_STATUSES,
    DELETABLE_STATUSES,
    PROCEED_TARGETS,
    TRANSITIONS,
    Phase,
    RunStatus,
    active_status,
    can_transition,
    failed_status,
    phase_of,
)
from pydantic import ValidationError


def test_six_statuses_two_phases() -> None:
    assert {s.value for s in RunStatus} == {
        "generating",
        "generated",
        "training",
        "completed",
        "generating_failed",
        "training_failed",
    }
    assert {p.value for p in Phase} == {"generating", "training"}


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("generating", "generated"),
        ("generating", "generating_failed"),
        ("generated", "training"),
        ("training", "completed"),
        ("training", "training_failed"),
        ("generating_failed", "generating"),
        ("training_failed", "training"),
    ],
)
def test_allowed_transitions(current: str, target: str) -> None:
    assert can_transition(RunStatus(current), RunStatus(target))


def test_exactly_seven_transitions_and_completed_is_terminal() -> None:
    assert sum(len(targets) for targets in TRANSITIONS.values()) == 7
    assert TRANSITIONS[RunStatus.COMPLETED] == frozenset()
    assert not can_transition(RunStatus.GENERATING_FAILED, RunStatus.TRAINING)
    assert not can_transition(RunStatus.GENERATED, RunStatus.GENERATING)


def test_blocking_proceed_and_delete_sets() -> None:
    assert RunStatus.COMPLETED not in BLOCKING_STATUSES
    assert len(BLOCKING_STATUSES) == 5
    assert PROCEED_TARGETS == {
        RunStatus.GENERATING_FAILED: RunStatus.GENERATING,
        RunStatus.TRAINING_FAILED: RunStatus.TRAINING,
    }
    assert DELETABLE_STATUSES == {
        RunStatus.GENERATING_FAILED,
        RunStatus.TRAINING_FAILED,
        RunStatus.GENERATED,
    }
    for failed, target in PROCEED_TARGETS.items():
        assert can_transition(failed, target)


def test_phase_helpers() -> None:
    for phase in Phase:
        assert phase_of(failed_status(phase)) == phase
        assert phase_of(active_status(phase)) == phase
        assert can_transition(active_status(phase), failed_status(phase))
    assert phase_of(RunStatus.COMPLETED) is None
    assert phase_of(RunStatus.GENERATED) is None


@pytest.mark.parametrize(
    ("total", "lanes", "expected"),
    [(10, 3, [(0, 4), (4, 7), (7, 10)]), (2, 5, [(0, 1), (1, 2)]), (0, 4, []), (7, 1, [(0, 7)])],
)
def test_split_into_lanes(total: int, lanes: int, expected: list[tuple[int, int]]) -> None:
    result = split_into_lanes(total, lanes)
    assert [(lane.start, lane.stop) for lane in result] == expected
    assert all(lane.cursor == lane.start and not lane.done for lane in result)
    assert [lane.lane for lane in result] == list(range(len(result)))


def test_lane_rejects_a_cursor_outside_its_range() -> None:
    with pytest.raises(ValidationError, match="start <= cursor <= stop"):
        Lane(lane=0, start=5, stop=10, cursor=11)


@pytest.mark.parametrize(
    "bad",
    [
        {"questions_per_chunk": 0},
        {"questions_per_chunk": 11},
        {"batch_size": 0},
        {"concurrency": 500},
        {"lanes": 0},
        {"max_chunks_per_run": 0},
        {"llm_model": ""},
        {"llm_model": "has space"},
        {"trainer": "torch"},
        {"unknown": 1},
    ],
)
def test_out_of_range_settings_are_rejected_with_a_clear_message(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate(bad)
    field = next(iter(bad))
    assert field in str(caught.value)
    with pytest.raises(ValidationError):
        SettingsUpdate.model_validate(bad)


def test_settings_update_applies_only_what_it_names() -> None:
    updated = SettingsUpdate(lanes=4).apply_to(Settings(questions_per_chunk=5))
    assert (updated.lanes, updated.questions_per_chunk) == (4, 5)
    with pytest.raises(ValidationError, match="no setting given"):
        SettingsUpdate.model_validate({})


def test_malformed_run_id_is_rejected() -> None:
    with pytest.raises(ValidationError, match="run_id"):
        BatchRecord.model_validate({"run_id": "not-a-uuid", "chunks": []})
