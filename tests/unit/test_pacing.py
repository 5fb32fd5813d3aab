"""The lane's pacer: turns at the rate the endpoint admits, learned from its refusals; slots
for chunks, lent while a refused call waits. A clock that moves only when a turn sleeps."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from deepmem.services import pacing
from deepmem.services.pacing import LanePacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def pacer(clock: Clock, concurrency: int = 8) -> LanePacer:
    return LanePacer(concurrency, clock=clock, sleep=clock.sleep)


async def sends(p: LanePacer, clock: Clock, count: int, every: float) -> list[float]:
    """`count` turns, one each `every` seconds of the clock (or later, if the pace says so)."""
    given = []
    for _ in range(count):
        given.append(await p.turn())
        clock.now += every
    return given


def test_nothing_is_paced_before_the_first_refusal() -> None:
    async def scenario() -> tuple[list[float], float | None]:
        clock = Clock()
        p = pacer(clock)
        return [await p.turn() for _ in range(50)], p.rate

    given, rate = asyncio.run(scenario())
    assert given == [100.0] * 50  # all at once: only the slots limit an unpaced lane
    assert rate is None


def test_a_refusal_paces_at_what_the_window_admitted() -> None:
    async def scenario() -> tuple[float, list[float]]:
        clock = Clock()
        p = pacer(clock)
        given = await sends(p, clock, 40, 0.024)  # 40 admitted in the second before ...
        refused = await p.turn()  # ... this one, which the endpoint refuses
        p.pushed_back(refused, retry_after=1.0)
        rate = p.rate or 0.0
        after = [await p.turn() for _ in range(5)]
        assert len(given) == 40
        return rate, after

    rate, after = asyncio.run(scenario())
    assert rate == pytest.approx(pacing.HEADROOM * 40)
    gaps = [b - a for a, b in itertools.pairwise(after)]
    # Evenly spaced at that pace (a little faster as it grows: the pace holds the turns back).
    assert all(1 / 40 < gap <= 1 / rate + 1e-9 for gap in gaps), gaps


def test_late_refusals_refine_the_cut_and_echoes_of_it_change_nothing() -> None:
    async def scenario() -> list[float | None]:
        clock = Clock()
        p = pacer(clock)
        early = await sends(p, clock, 40, 0.024)
        first = await p.turn()
        p.pushed_back(first)
        seen = [p.rate]
        for sent in early[-5:]:  # sent before the cut
            p.pushed_back(sent)
        seen.append(p.rate)
        soon = await p.turn()  # sent after it, but within a window of it
        p.pushed_back(soon)
        seen.append(p.rate)
        return seen

    cut, before, soon = asyncio.run(scenario())
    assert cut == pytest.approx(pacing.HEADROOM * 40)
    # Five of the 40 were refused too, their answers late: the window held 35 of the lane's
    # calls. The pace is measured again (no second cut on top of the first).
    assert before == pytest.approx(pacing.HEADROOM * 35)
    assert soon == before


def test_a_cut_never_goes_deeper_than_half_and_never_below_the_floor() -> None:
    async def scenario() -> list[float]:
        clock = Clock()
        p = pacer(clock)
        first = (await sends(p, clock, 41, 0.024))[-1]
        p.pushed_back(first)
        seen = [p.rate or 0.0]
        for _ in range(12):  # every call refused, each a window after the last cut
            clock.now += 1.5
            sent = await p.turn()
            p.pushed_back(sent)
            seen.append(p.rate or 0.0)
        return seen

    seen = asyncio.run(scenario())
    for before, after in itertools.pairwise(seen):
        assert after >= min(before, max(pacing.MIN_RATE, before * pacing.MAX_CUT)) - 1e-9
        assert after <= before
    assert seen[-1] == pacing.MIN_RATE


def test_a_first_refusal_with_nothing_admitted_teaches_no_rate() -> None:
    async def scenario() -> float | None:
        clock = Clock()
        p = pacer(clock)
        sent = await p.turn()  # the very first call is refused (a window full of others')
        p.pushed_back(sent, retry_after=0.0)
        return p.rate

    assert asyncio.run(scenario()) is None


def test_the_pace_grows_while_it_holds_calls_back_faster_the_longer_nothing_is_refused() -> None:
    async def scenario() -> list[float]:
        clock = Clock()
        p = pacer(clock)
        first = (await sends(p, clock, 11, 0.1))[-1]
        p.pushed_back(first)  # 10 admitted in the window: about 10 a second
        rates = [p.rate or 0.0]
        for _ in range(4):
            started = clock.now
            while clock.now - started < 3.0:  # callers always waiting: the pace binds
                await p.turn()
            rates.append(p.rate or 0.0)
        return rates

    rates = asyncio.run(scenario())
    growth = [b / a for a, b in itertools.pairwise(rates)]
    assert all(g > 1 for g in growth), rates
    assert growth == sorted(growth), rates  # each 3 s grows more than the one before
    assert growth[0] < 1.1, rates  # just after a cut: a few percent, probing
    assert rates[-1] > 3 * rates[0], rates  # a cut too deep is undone within seconds


def test_the_pace_does_not_grow_while_the_slots_are_what_limits() -> None:
    async def scenario() -> tuple[float, float]:
        clock = Clock()
        p = pacer(clock)
        first = (await sends(p, clock, 11, 0.1))[-1]
        p.pushed_back(first)
        cut = p.rate or 0.0
        await sends(p, clock, 30, 0.5)  # one call each half second: far under the pace
        return cut, p.rate or 0.0

    cut, later = asyncio.run(scenario())
    assert later == cut


def test_a_turn_reserved_before_a_cut_is_taken_at_the_new_pace() -> None:
    async def scenario() -> tuple[float, float, float]:
        clock = Clock()
        p = pacer(clock)
        first = (await sends(p, clock, 41, 0.024))[-1]
        p.pushed_back(first)
        waiting = asyncio.create_task(p.turn())  # reserved at about 40 a second
        await asyncio.sleep(0)
        clock.now += 1.5
        sent = await p.turn()
        p.pushed_back(sent)  # nothing of the lane admitted in its window: the deepest cut
        return sent, await waiting, p.rate or 0.0

    sent, taken, rate = asyncio.run(scenario())
    assert rate == pytest.approx(pacing.HEADROOM * 40 * pacing.MAX_CUT)
    assert taken == pytest.approx(sent + 1 / rate)  # queued behind the cut, at its pace


def test_a_refused_call_lends_its_slot_while_it_waits() -> None:
    async def scenario() -> list[str]:
        p = LanePacer(1)
        order: list[str] = []
        waiting = asyncio.Event()
        released = asyncio.Event()

        async def refused_chunk() -> None:
            await p.enter()
            async with p.idle():  # the Retry-After wait
                waiting.set()
                await released.wait()
            order.append("retry has its slot back")
            p.leave()

        async def other_chunk() -> None:
            await waiting.wait()
            await p.enter()  # would wait for ever if the slot were held through the wait
            order.append("another chunk ran")
            released.set()
            await asyncio.sleep(0)
            order.append("another chunk done")
            p.leave()

        await asyncio.wait_for(asyncio.gather(refused_chunk(), other_chunk()), 5)
        return order

    assert asyncio.run(scenario()) == [
        "another chunk ran",
        "another chunk done",
        "retry has its slot back",
    ]


def test_slots_stay_counted_when_a_lending_chunk_is_cancelled() -> None:
    async def scenario() -> int:
        p = LanePacer(2)
        lent = asyncio.Event()

        async def chunk() -> None:
            await p.enter()
            try:
                async with p.idle():
                    lent.set()
                    await asyncio.sleep(60)
            finally:
                p.leave()

        task = asyncio.create_task(chunk())
        await lent.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        free = 0
        while True:  # count the free slots without waiting
            try:
                await asyncio.wait_for(p.enter(), 0.01)
            except TimeoutError:
                return free
            free += 1

    assert asyncio.run(scenario()) == 2  # not 3: the lent slot was not given back twice


def test_after_a_burst_filled_the_window_no_call_is_sent_into_it_before_it_drains() -> None:
    async def scenario() -> tuple[float, float]:
        clock = Clock()
        p = pacer(clock)
        burst = [await p.turn() for _ in range(40)]  # all at once, all admitted
        clock.now += 0.3
        refused = await p.turn()
        p.pushed_back(refused)  # the window is full: 40 of the lane's calls in it
        return burst[0], await p.turn()

    started, next_turn = asyncio.run(scenario())
    # Not 1/39.6 s later (the pace alone): once the burst's calls leave the window.
    assert next_turn == pytest.approx(started + 1.0)
