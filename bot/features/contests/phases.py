"""The phase loop: rounds move on when the database says they are due, never on a timer held in memory.

Each pass runs every due phase change (``PhaseStore.due``: entries close → voting opens, voting closes →
tally), then sends what the rounds owe their channels (the poster), then sleeps on ``Services.clock`` until
the next deadline or retry, at most ``IDLE_CHECK_S`` (a round started meanwhile wakes it at once). So a
restart needs nothing kept: the first pass finds whatever fell due while the bot was down and runs it once
(the changes are conditional updates), and the owed posts go out in their order.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bot.core.faults import Checkpoints
from bot.core.tasks import PassLoop
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
        self._started = self._done = 0  # passes begun and ended
        self._pass_ended = asyncio.Condition()
        self._loop = PassLoop("contest-phases", self._pass, clock.sleep, idle_s=IDLE_CHECK_S)

    def start(self) -> None:
        self._loop.start()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let a pass under way finish (see ``PassLoop.stop``)."""
        await self._loop.stop(timeout_s)

    def wake(self) -> None:
        """Look at the rounds now (one was started, cancelled or changed)."""
        self._loop.wake()

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

    async def _pass(self) -> float | None:
        """One pass; returns the seconds until the next deadline or retry (None: none is known)."""
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
        return None if due is None else (due - self._now()).total_seconds()
