"""The bot's background loops.

- ``BackgroundLoop``: one named task that its owner starts and stops (stop cancels it and waits for it to end).
- ``PassLoop``: one named task that runs passes, each of which may write to the database, and sleeps between
  them on the bot's clock until the next pass is due or a ``wake``; stop lets a pass under way finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

_log = logging.getLogger(__name__)
MIN_WAIT_S = 0.05  # a pass due "now" (or in the past) still lets the loop breathe between passes


async def wait_event(event: asyncio.Event, sleep: Callable[[float], Awaitable[None]], wait_s: float | None) -> bool:
    """Wait for ``event`` at most ``wait_s`` seconds of ``sleep``'s time (the bot's clock, not asyncio's: tests
    simulate time; None: as long as it takes); True if it was set."""
    if event.is_set():
        return True
    if wait_s is None:
        await event.wait()
        return True
    if wait_s <= 0:
        return False
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(sleep(wait_s))
    try:
        await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        sleeper.cancel()
    return event.is_set()


class BackgroundLoop:
    def __init__(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._name = name
        self._run = run
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop once; a second call while it runs does nothing."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Cancel the loop and wait until it has ended, so nothing it does outlives its owner."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class PassLoop:
    """Runs ``run_pass`` again and again. ``run_pass`` returns the seconds until the next pass is due (None: it
    does not know, so it looks again after ``idle_s``), and must handle its own failures: one that escapes is
    logged as critical and ends the loop. Between passes the loop sleeps on ``sleep`` (the bot's clock, which
    tests simulate) for that long, at most ``idle_s``, unless ``wake`` comes first; a wake during a pass makes
    the next pass follow at once."""

    def __init__(self, name: str, run_pass: Callable[[], Awaitable[float | None]],
                 sleep: Callable[[float], Awaitable[None]], *, idle_s: float) -> None:
        self._name = name
        self._run_pass = run_pass
        self._sleep = sleep
        self._idle_s = idle_s
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop once; a second call while it runs does nothing."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=self._name)

    def wake(self) -> None:
        """Run the next pass now (or as soon as the one under way ends)."""
        self._wake.set()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let a pass under way finish (a cancel in the middle of a query would strand a database connection),
        then end the loop; cancel it only when the pass outlasts ``timeout_s``."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
        if not done:
            self._task.cancel()
        with contextlib.suppress(BaseException):  # a loop that died was logged: it must not fail the shutdown
            await self._task
        self._task = None

    async def _run(self) -> None:
        try:
            while not self._stopping:
                self._wake.clear()
                due_in_s = await self._run_pass()
                if self._stopping:
                    return
                wait_s = self._idle_s if due_in_s is None else max(MIN_WAIT_S, due_in_s)
                await wait_event(self._wake, self._sleep, min(wait_s, self._idle_s))
        except BaseException:
            if not self._stopping:
                _log.critical("the background loop %s stopped", self._name, exc_info=True)
            raise
