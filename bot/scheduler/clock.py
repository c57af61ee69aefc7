"""Time as the scheduler sees it: a monotonic clock for waits, wall time for daily quotas, async sleep.

``SystemClock`` is the real one. ``SimulatedClock`` lets tests and the benchmark run hours of
scheduling in milliseconds: time moves only when ``advance``/``run_until_done`` says so.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float:
        """Wall-clock epoch seconds (daily quota resets)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class SimulatedClock:
    """A clock whose time jumps only when told; ``sleep`` parks the caller until then."""

    def __init__(self, start: float = 0.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self._now + max(0.0, seconds), next(self._seq), future))
        await future

    def next_deadline(self) -> float | None:
        while self._timers and self._timers[0][2].done():  # cancelled sleepers
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    @staticmethod
    async def settle() -> None:
        """Let every runnable task run until all of them wait (on the clock or on each other)."""
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)  # asyncio's run queue; fall back to a fixed number of hops
        for hop in range(100_000):
            await asyncio.sleep(0)
            if (ready is not None and not ready) or (ready is None and hop >= 50):
                return

    def _fire_due(self) -> None:
        while self._timers and self._timers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._timers)
            if not future.done():
                future.set_result(None)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking each sleeper at its own deadline, in order."""
        target = self._now + seconds
        await self.settle()
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > target:
                break
            self._now = max(self._now, deadline)
            self._fire_due()
            await self.settle()
        self._now = max(self._now, target)
        await self.settle()

    async def run_until_done(self, awaitable: Awaitable[T], *, limit_s: float = 1e9) -> T:
        """Run ``awaitable`` to completion, jumping time to the next sleeper whenever all tasks wait."""
        task = asyncio.ensure_future(awaitable)
        start = self._now
        while not task.done():
            await self.settle()
            if task.done():
                break
            deadline = self.next_deadline()
            if deadline is None or deadline - start > limit_s:
                task.cancel()
                raise RuntimeError(f"simulation stuck at t={self._now:.3f}: nothing to wake")
            self._now = max(self._now, deadline)
            self._fire_due()
        return task.result()
