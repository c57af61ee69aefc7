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
import time

from bot.scheduler import SimulatedClock


class FrozenClock(SimulatedClock):
    def __init__(self, wall_start: float | None = None) -> None:
        super().__init__(start=1_000.0, wall_start=time.time() if wall_start is None else wall_start)

    async def sleep(self, seconds: float) -> None:
        safety_net = asyncio.get_running_loop().call_later(max(0.0, seconds), self._reach,
                                                            self.monotonic() + max(0.0, seconds))
        try:
            await super().sleep(seconds)
        finally:
            safety_net.cancel()

    def _reach(self, deadline: float) -> None:
        self._now = max(self._now, deadline)
        self._fire_due()

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``; sleepers whose deadline passed wake, in deadline order."""
        self._now += seconds
        self._fire_due()
        await asyncio.sleep(0)  # let the woken run before the test goes on
