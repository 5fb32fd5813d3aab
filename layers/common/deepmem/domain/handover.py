"""How long a generation lasts, and when its execution hands over to the next one.

One Step Functions execution may run 24 h and record 25,000 history events. A generation
execution spends a fixed number of events, a few per lane and 7 per GenerateBatch call
(+3 per retry). An execution that nears its budget (a share of both quotas) ends by starting
the next execution of the same attempt (`<run>-generating-<attempt>-<n>`), carrying the lanes'
cursors; resume stays by chunk identity, so nothing is generated twice across the chain.

The estimate is arithmetic over the settings: every chunk costs one LLM call of
`seconds_per_llm_call`, a lane keeps `concurrency` calls in flight, a batch call lasts at most
the function's timeout less its margin.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from deepmem.domain.errors import UnfinishableRunError
from deepmem.domain.models import Settings

HISTORY_EVENT_QUOTA = 25_000
EXECUTION_SECONDS_QUOTA = 86_400
#: Events of an execution outside the lanes' loops: start, route, plan, the Map's own, finish,
#: the handover's start-execution task, the end (measured on the local workflow: 24; kept high).
EVENTS_FIXED = 30
#: Events of each lane (Map iteration) outside its calls.
EVENTS_PER_LANE = 6
#: Events of one GenerateBatch call and its LaneDone choice.
EVENTS_PER_CALL = 7
#: What a batch invocation keeps in hand before its timeout (the chunk stream's margin).
CALL_MARGIN_SECONDS = 20.0


class GenerationLimits(BaseModel):
    """What one execution may spend before it hands over, and what a run may last."""

    model_config = ConfigDict(frozen=True)

    event_budget: int = Field(default=10_000, ge=1, le=HISTORY_EVENT_QUOTA)
    seconds_budget: float = Field(default=72_000.0, ge=0, le=EXECUTION_SECONDS_QUOTA - 1_800)
    function_seconds: float = Field(default=900.0, gt=0)
    seconds_per_llm_call: float = Field(default=2.0, gt=0)
    max_run_seconds: float = Field(default=14 * 86_400.0, gt=0)


class HandoverBudget(BaseModel):
    """What a lane of one execution may spend: calls, and a wall-clock deadline (epoch s)."""

    model_config = ConfigDict(frozen=True)

    calls_per_lane: int = Field(ge=1)
    deadline: float


class RunEstimate(BaseModel):
    """The plan's forecast of a generation, recorded on the run."""

    model_config = ConfigDict(frozen=True)

    total_chunks: int
    lanes: int
    seconds_per_llm_call: float
    wall_seconds: float
    batch_calls: int
    executions: int
    events_per_execution: int
    finishable: bool
    reason: str | None = None


def calls_per_lane(event_budget: int, lanes: int) -> int:
    """GenerateBatch calls each of `lanes` lanes may make in one execution (0: none fits)."""
    room = event_budget - EVENTS_FIXED - EVENTS_PER_LANE * lanes
    return max(0, room // (EVENTS_PER_CALL * lanes))


def estimate_generation(
    total_chunks: int, settings: Settings, limits: GenerationLimits
) -> RunEstimate:
    lanes = max(1, min(settings.lanes, total_chunks or 1))
    lane_chunks = math.ceil(total_chunks / lanes)
    lane_seconds = lane_chunks * limits.seconds_per_llm_call / settings.concurrency
    call_seconds = max(1.0, limits.function_seconds - CALL_MARGIN_SECONDS)
    lane_calls = max(1, math.ceil(lane_seconds / call_seconds))
    budget_calls = calls_per_lane(limits.event_budget, lanes)
    by_events = math.ceil(lane_calls / budget_calls) if budget_calls else 0
    by_time = math.ceil(lane_seconds / limits.seconds_budget) if limits.seconds_budget else 0
    executions = max(1, by_events, by_time)
    calls_each = math.ceil(lane_calls / executions)
    reason = None
    if budget_calls == 0:
        reason = (
            f"{lanes} lanes leave no GenerateBatch call within an execution's budget of "
            f"{limits.event_budget} history events: use fewer lanes"
        )
    elif lane_seconds > limits.max_run_seconds:
        reason = (
            f"{total_chunks} chunks at {limits.seconds_per_llm_call:g} s per LLM call over "
            f"{lanes} lanes x {settings.concurrency} calls in flight take "
            f"{lane_seconds / 86_400:.1f} days, more than the {limits.max_run_seconds / 86_400:g}"
            " days a run may last: raise lanes or concurrency, or cap max_chunks_per_run"
        )
    return RunEstimate(
        total_chunks=total_chunks,
        lanes=lanes,
        seconds_per_llm_call=limits.seconds_per_llm_call,
        wall_seconds=round(lane_seconds, 1),
        batch_calls=lane_calls * lanes,
        executions=executions,
        events_per_execution=EVENTS_FIXED
        + lanes * (EVENTS_PER_LANE + EVENTS_PER_CALL * calls_each),
        finishable=reason is None,
        reason=reason,
    )


def require_finishable(estimate: RunEstimate) -> RunEstimate:
    if not estimate.finishable:
        raise UnfinishableRunError(estimate.reason or "the run cannot finish", estimate)
    return estimate


def budget_for(lanes: int, limits: GenerationLimits, now: float) -> HandoverBudget:
    return HandoverBudget(
        calls_per_lane=max(1, calls_per_lane(limits.event_budget, lanes)),
        deadline=now + limits.seconds_budget,
    )
