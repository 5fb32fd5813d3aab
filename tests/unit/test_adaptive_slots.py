"""The generation stream's concurrency limit: additive increase, multiplicative decrease."""

from __future__ import annotations

import asyncio

from deepmem.services.chunk_stream import AdaptiveSlots


def test_pushback_cuts_the_limit_and_success_brings_it_back() -> None:
    async def scenario() -> list[float]:
        slots = AdaptiveSlots(32)
        seen = [slots.limit]
        started = await slots.acquire()
        await slots.release(started, pushed_back=True)
        seen.append(slots.limit)
        for _ in range(400):  # about one per slot per step: 24 + 25 + ... + 31 to climb back
            started = await slots.acquire()
            await slots.release(started, pushed_back=False)
        seen.append(slots.limit)
        return seen

    full, cut, recovered = asyncio.run(scenario())
    assert full == 32
    assert cut == 24
    assert recovered == 32  # never above the configured concurrency


def test_one_cut_per_round_trip() -> None:
    async def scenario() -> float:
        slots = AdaptiveSlots(16)
        # Eight calls sent together all come back rate-limited: one signal, one cut.
        starts = [await slots.acquire() for _ in range(8)]
        for started in starts:
            await slots.release(started, pushed_back=True)
        return slots.limit

    assert asyncio.run(scenario()) == 12


def test_in_flight_never_exceeds_the_limit_and_never_drops_to_zero() -> None:
    async def scenario() -> tuple[int, float]:
        slots = AdaptiveSlots(4)
        for _ in range(20):  # repeated cuts, each from a call sent after the previous cut
            started = await slots.acquire()
            await slots.release(started, pushed_back=True)
        peak = 0

        async def call() -> None:
            nonlocal peak
            started = await slots.acquire()
            peak = max(peak, slots.active)
            await asyncio.sleep(0.001)
            await slots.release(started, pushed_back=None)

        await asyncio.gather(*(call() for _ in range(10)))
        return peak, slots.limit

    peak, limit = asyncio.run(scenario())
    assert limit == 1.0
    assert peak == 1  # one at a time, but never none: the stream still moves


def test_failures_say_nothing_about_load() -> None:
    async def scenario() -> float:
        slots = AdaptiveSlots(8)
        started = await slots.acquire()
        await slots.release(started, pushed_back=None)
        return slots.limit

    assert asyncio.run(scenario()) == 8
