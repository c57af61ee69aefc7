"""The phase loop: rounds move on when the database says they are due, never on a timer held in memory.

Each pass runs every due phase change (``PhaseStore.due``: entries close → voting opens, voting closes →
tally), then sends what the rounds owe their channels (the poster), then sleeps on ``Services.clock`` until
the next deadline or retry, at most ``IDLE_CHECK_S`` (a round started meanwhile wakes it at once). So a
restart needs nothing kept: the first pass finds whatever fell due while the bot was down and runs it once
(the changes are conditional updates), and the owed posts go out in their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bot.core.faults import Checkpoints
from bot.features.contests.phase_store import PhaseStore
from bot.scheduler import Clock

_log = logging.getLogger(__name__)
IDLE_CHECK_S = 300.0  # without a known deadline, look again this often
RETRY_S = 30.0  # after a pass failed (the database did not answer, say)
MAX_CHANGES_PER_PASS = 1000  # a bound on one pass, far above what any server runs at once


class Poster(Protocol):
    async def deliver_due(self) -> int: ...


class PhaseLoop:
    def __init__(self, phases: PhaseStore, poster: Poster, clock: Clock,
                 checkpoints: Checkpoints | None = None) -> None:
        self._phases = phases
        self._poster = poster
        self._clock = clock
        self._checkpoints = checkpoints or Checkpoints()
        self._wake = asyncio.Event()
        self._started = self._done = 0  # passes begun and ended
        self._pass_ended = asyncio.Condition()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="contest-phases")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let a pass under way finish (a cancel mid-query would strand a database connection)."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
        if not done:
            self._task.cancel()
        with contextlib.suppress(BaseException):  # a pass that died (logged below) must not fail the unload
            await self._task
        self._task = None

    def wake(self) -> None:
        """Look at the rounds now (one was started, cancelled or changed)."""
        self._wake.set()

    async def next_pass(self) -> None:
        """Wake the loop and wait for the end of a pass that begins after this call (for diagnostics and tests:
        then everything that was due when it was called has been run, and its posts sent or tried)."""
        wanted = self._started + 1
        self.wake()
        async with self._pass_ended:
            await self._pass_ended.wait_for(lambda: self._done >= wanted)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.time(), UTC)

    async def run_due(self) -> int:
        """Run every phase change that is due, each once; returns how many ran."""
        ran = 0
        for _ in range(MAX_CHANGES_PER_PASS):
            due = await self._phases.due()
            if not due:
                break
            for contest in due:
                if contest.phase == "submitting":
                    changed = await self._phases.open_voting(contest.id)
                    if changed is not None:
                        self._checkpoints.reached("contest voting opened")
                else:
                    changed = await self._phases.close(contest.id)
                    if changed is not None:
                        self._checkpoints.reached("contest tallied")
                ran += changed is not None
        return ran

    async def run_once(self) -> None:
        await self.run_due()
        await self._poster.deliver_due()

    async def _run(self) -> None:
        try:
            while not self._stopping:
                self._wake.clear()
                self._started += 1
                due: datetime | None = None
                try:
                    await self.run_once()
                    deadlines = [moment for moment in (await self._phases.next_deadline(),
                                                       await self._phases.next_retry()) if moment is not None]
                    due = min(deadlines, default=None)
                except Exception:  # storage trouble: try again shortly rather than stop for good
                    _log.exception("the contest phase loop failed; it tries again in %g s", RETRY_S)
                    due = self._now() + timedelta(seconds=RETRY_S)
                async with self._pass_ended:
                    self._done = self._started
                    self._pass_ended.notify_all()
                if self._stopping:
                    return
                wait_s = IDLE_CHECK_S if due is None else max(0.05, (due - self._now()).total_seconds())
                await self._sleep(min(wait_s, IDLE_CHECK_S))
        except BaseException:
            if not self._stopping:
                _log.critical("the contest phase loop stopped", exc_info=True)
            raise

    async def _sleep(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
