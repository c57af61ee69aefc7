"""``FrozenClock``: the clock of end-to-end tests. Time stands still until the test moves it.

The bot reads time from it (token buckets, quotas, the presenter's token age, ETAs) and so does the
fake Discord (snowflakes, interaction token expiry), so a test that says "15 minutes pass" is exact
on both sides, and texts such as "Try again in 30 min" never drift with a loaded machine.

``sleep`` ends when the test advances past its deadline. As a safety net it also ends after the same
number of real seconds, jumping the clock to its deadline, so nothing in a real bot (a drain timeout,
say) can wait forever on a clock nobody moves.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time


class FrozenClock:
    def __init__(self, wall_start: float | None = None) -> None:
        self._now = 1_000.0
        self._wall_offset = (time.time() if wall_start is None else wall_start) - self._now
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        deadline = self._now + max(0.0, seconds)
        heapq.heappush(self._timers, (deadline, next(self._seq), future))
        safety_net = loop.call_later(max(0.0, seconds), self._reach, deadline)
        try:
            await future
        finally:
            safety_net.cancel()

    def _reach(self, deadline: float) -> None:
        self._now = max(self._now, deadline)
        self._fire_due()

    def _fire_due(self) -> None:
        while self._timers and (self._timers[0][0] <= self._now or self._timers[0][2].done()):
            _, _, future = heapq.heappop(self._timers)
            if not future.done():
                future.set_result(None)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``; sleepers whose deadline passed wake, in deadline order."""
        self._now += seconds
        self._fire_due()
        await asyncio.sleep(0)  # let the woken run before the test goes on
