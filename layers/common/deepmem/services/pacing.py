"""A lane's admission to the LLM (the `Pacer` port's service side): `concurrency` slots for
its chunks, and turns for their calls at the rate the endpoint admits.

Every attempt, retries included, waits for a turn; a refusal for load (HTTP 429) is reported
the moment it comes back. The pace is learned from the refusals themselves:

- Until the first refusal nothing is paced: only the slots limit the calls.
- A refusal means the endpoint's window is full, so what this lane got admitted in the last
  `window_s` (its sends minus its refused sends) is what the endpoint gives it now: the pace
  becomes a little under that (`HEADROOM`). Set from a measurement, never raised by a refusal
  and never cut by more than `MAX_CUT` at once, so the refusals that follow while the window
  drains (the sends that filled it are still in it) do not spiral the pace down. A refusal of
  a call sent before the last cut says nothing new and changes nothing.
- While the pace is what holds the calls back, it grows: slowly just after a cut and faster
  the longer no refusal comes (the growth rate doubles every `DOUBLING_S`), so near the limit
  it probes a percent a second, and after a cut that was too deep (a refusal at the lane's
  first call, say) it is back within seconds.

Turns are spaced evenly (no burst credit): a sliding-window limit admits an even stream at
its rate and refuses a burst above it. A turn reserved before a cut is taken again at the new
pace. While a refused call waits out its Retry-After, its chunk lends its slot (`idle`), so the
wait idles no slot. One event loop, no locks.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

#: The pace after a refusal, as a share of what the window admitted this lane.
HEADROOM = 0.99
#: The deepest one cut may go: this share of the pace before it.
MAX_CUT = 0.5
#: A first refusal with fewer of this lane's calls admitted in its window teaches no rate
#: (a window full of other clients' calls, a fault at the first call): still not paced.
MIN_ADMITTED = 2
#: Never slower than this many turns per second.
MIN_RATE = 1.0
#: Growth (per second, relative) just after a cut; it doubles every DOUBLING_S seconds
#: without a refusal, up to MAX_GROWTH.
BASE_GROWTH = 0.01
DOUBLING_S = 1.5
MAX_GROWTH = 1.0


class LanePacer:
    """Implements `ports.Pacer` for one lane call (one event loop)."""

    def __init__(
        self,
        concurrency: int,
        *,
        window_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate: float | None = None
        """Turns per second; None until the first refusal (not paced)."""
        self.turns = 0
        self.refusals = 0
        self.cuts = 0
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._lending: set[asyncio.Task[object] | None] = set()
        self._window = window_s
        self._clock = clock
        self._sleep = sleep
        self._sent: list[float] = []  # send times, sorted
        self._refused: list[float] = []  # send times, sorted
        self._next = 0.0
        self._last_cut = -math.inf
        self._grown_at = 0.0
        self._epoch = 0
        self._share = 0

    # ---- slots: one per chunk in progress -----------------------------------------------------

    async def enter(self) -> None:
        """Wait for a slot for a new chunk."""
        await self._slots.acquire()

    def leave(self) -> None:
        """The chunk is done (answered, failed or cancelled): its slot is free."""
        if asyncio.current_task() in self._lending:
            self._lending.discard(asyncio.current_task())  # lent and never taken back
        else:
            self._slots.release()

    @asynccontextmanager
    async def idle(self) -> AsyncIterator[None]:
        """The chunk's slot is lent while it waits (see `ports.Pacer.idle`), unless as many
        are lent already as there are slots: at most twice `concurrency` chunks in progress,
        whatever the endpoint does."""
        task = asyncio.current_task()
        if task in self._lending or len(self._lending) >= self._concurrency:
            yield
            return
        self._slots.release()
        self._lending.add(task)
        yield
        await self._slots.acquire()
        self._lending.discard(task)

    # ---- turns: one per attempt ---------------------------------------------------------------

    async def turn(self) -> float:
        """Wait for this attempt's turn; return when it was given (names the attempt)."""
        while True:
            now = self._clock()
            if self.rate is None:
                return self._give(now)
            self._grow(now)
            at = self._room_at(max(now, self._next))
            self._next = at + 1.0 / self.rate
            epoch = self._epoch
            if at > now:
                await self._sleep(at - now)
            if epoch == self._epoch:
                return self._give(max(at, self._clock()))
            # Cut while this turn waited: it was reserved at the old pace; take one at the new.

    def pushed_back(self, sent: float, retry_after: float | None = None) -> None:
        """The attempt given its turn at `sent` was refused for load. `retry_after` is the
        endpoint's hint for that attempt, honoured by its own retry: the pace needs it not."""
        self.refusals += 1
        now = self._clock()
        bisect.insort(self._refused, sent)
        self._forget_before(now - 2 * self._window)
        admitted = self._admitted_before(sent)
        if sent < self._last_cut:
            self._refine(admitted)
            return
        if sent < self._last_cut + self._window:
            return  # sent so soon after the cut that the window still held calls sent at the
            # old pace: an echo of what that cut answered
        if self.rate is None and admitted < MIN_ADMITTED:
            return
        measured = HEADROOM * admitted / self._window
        if self.rate is not None:
            measured = max(min(measured, self.rate), MAX_CUT * self.rate)
        self.rate = max(MIN_RATE, measured)
        self._share = max(1, admitted)
        self.cuts += 1
        self._last_cut = now
        self._grown_at = now
        self._epoch += 1
        last = self._sent[-1] if self._sent else now
        self._next = last + 1.0 / self.rate

    def _refine(self, admitted: int) -> None:
        """A refusal, late, of a call sent before the last cut: the calls of the burst that
        filled the window are refused in the order they came, so the window that cut measured
        held fewer of this lane's calls than it counted then. Lower the pace to that; no cut."""
        if self.rate is None or admitted >= self._share:
            return
        self._share = max(1, admitted)
        self.rate = max(MIN_RATE, min(self.rate, HEADROOM * admitted / self._window))
        self._epoch += 1
        self._next = (self._sent[-1] if self._sent else self._clock()) + 1.0 / self.rate

    def _admitted_before(self, sent: float) -> int:
        """This lane's calls the endpoint admitted in the window that ended at `sent`, the
        send of a refused call: the window was full then, so that is the lane's share of it.
        (Ended at the refused send, not now: the calls sent since are not known yet.)"""
        start = sent - self._window
        sends = bisect.bisect_left(self._sent, sent) - bisect.bisect_left(self._sent, start)
        refused = bisect.bisect_left(self._refused, sent) - bisect.bisect_left(self._refused, start)
        return max(0, sends - refused)

    def _room_at(self, at: float) -> float:
        """`at`, or later if the window ending then would hold more of this lane's calls than
        the endpoint admitted it at the last cut (nor fewer than the pace sends in a window):
        after a burst filled the window, no call is sent into it before it drains."""
        assert self.rate is not None
        limit = max(self._share, math.floor(self.rate * self._window))
        refused = list(self._refused)
        admitted = []
        for sent in reversed(self._sent):  # newest first
            if sent <= at - self._window:
                break
            if refused and refused[-1] == sent:
                refused.pop()
                continue
            while refused and refused[-1] > sent:
                refused.pop()
            admitted.append(sent)
        if len(admitted) < limit:
            return at
        return max(at, admitted[limit - 1] + self._window)

    def _give(self, now: float) -> float:
        self.turns += 1
        if self._sent and now < self._sent[-1]:
            now = self._sent[-1]  # kept sorted for bisect
        self._sent.append(now)
        self._forget_before(now - 2 * self._window)
        return now

    def _grow(self, now: float) -> None:
        """Grow the pace for the time since the last turn, if the pace held that turn back."""
        assert self.rate is not None
        elapsed = now - self._grown_at
        self._grown_at = now
        if self._next <= now or elapsed <= 0:
            return  # the slots, not the pace, are what limit the calls now
        since_cut = now - self._last_cut
        growth = min(MAX_GROWTH, BASE_GROWTH * 2 ** (since_cut / DOUBLING_S))
        self.rate *= math.exp(growth * elapsed)

    def _forget_before(self, horizon: float) -> None:
        del self._sent[: bisect.bisect_right(self._sent, horizon)]
        del self._refused[: bisect.bisect_right(self._refused, horizon)]
