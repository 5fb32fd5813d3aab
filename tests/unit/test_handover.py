"""The run estimate and the handover budget: pure arithmetic over the settings."""

from __future__ import annotations

from uuid import uuid4

import pytest
from deepmem.domain.errors import NotOurExecutionError, UnfinishableRunError
from deepmem.domain.executions import execution_name, execution_segment, parse_execution_name
from deepmem.domain.handover import (
    EVENTS_FIXED,
    EVENTS_PER_CALL,
    EVENTS_PER_LANE,
    HISTORY_EVENT_QUOTA,
    GenerationLimits,
    budget_for,
    calls_per_lane,
    estimate_generation,
    require_finishable,
)
from deepmem.domain.models import Settings
from deepmem.domain.status import Phase


def test_an_execution_of_any_lane_count_stays_inside_its_event_budget() -> None:
    for lanes in range(1, 41):
        calls = calls_per_lane(10_000, lanes)
        assert calls >= 1
        events = EVENTS_FIXED + lanes * (EVENTS_PER_LANE + EVENTS_PER_CALL * calls)
        assert events <= 10_000 < HISTORY_EVENT_QUOTA
    assert calls_per_lane(100, 40) == 0


def test_a_million_chunks_on_the_defaults() -> None:
    estimate = estimate_generation(1_000_000, Settings(), GenerationLimits())
    # 2 lanes x 16 calls in flight at 2 s a call: 16 chunks/s, 62,500 s, inside one execution.
    assert estimate.wall_seconds == pytest.approx(1_000_000 * 2 / 32)
    assert estimate.executions == 1 and estimate.finishable
    assert estimate.batch_calls == 2 * -(-62_500 // 880)  # a call lasts 900 s less 20
    assert estimate.events_per_execution == 30 + 2 * (6 + 7 * 72)


def test_a_run_longer_than_an_execution_hands_over_by_time() -> None:
    estimate = estimate_generation(10_000_000, Settings(lanes=4), GenerationLimits())
    lane_seconds = 2_500_000 * 2 / 16
    assert estimate.wall_seconds == pytest.approx(lane_seconds)
    assert estimate.executions == -(-int(lane_seconds) // 72_000)
    assert estimate.finishable


def test_settings_that_cannot_finish_are_refused_with_the_reason() -> None:
    slow = estimate_generation(10_000_000, Settings(lanes=1, concurrency=1), GenerationLimits())
    assert not slow.finishable and slow.reason is not None and "days" in slow.reason
    with pytest.raises(UnfinishableRunError) as refused:
        require_finishable(slow)
    assert refused.value.estimate == slow
    crowded = estimate_generation(1_000, Settings(lanes=40), GenerationLimits(event_budget=200))
    assert not crowded.finishable and "fewer lanes" in (crowded.reason or "")


def test_the_budget_of_a_lane() -> None:
    budget = budget_for(4, GenerationLimits(event_budget=1_000, seconds_budget=60), now=100.0)
    assert budget.calls_per_lane == calls_per_lane(1_000, 4)
    assert budget.deadline == 160.0


def test_segments_name_the_executions_of_a_handover_chain() -> None:
    run_id = uuid4()
    assert execution_name(run_id, Phase.GENERATING, 3) == f"{run_id}-generating-3"
    name = execution_name(run_id, Phase.GENERATING, 3, 2)
    assert name == f"{run_id}-generating-3-2"
    assert parse_execution_name(name) == (run_id, Phase.GENERATING, 3)
    assert execution_segment(name) == 2
    assert execution_segment(execution_name(run_id, Phase.GENERATING, 3)) == 0
    with pytest.raises(NotOurExecutionError):
        parse_execution_name(f"{run_id}-generating-3-0")  # segments count from 1
