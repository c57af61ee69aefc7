"""The outbox: every ended job is owed its last message until Discord has accepted it.

At start-up, and then whenever an owed delivery falls due (a failed attempt waits 10 s, 30 s, 90 s,
..., see ``presenter.delivery_backoff_s``), the outbox asks the presenter to show the end of each
owed job again, rebuilt from storage. Repeats are harmless: an edit sets the same message again, and a
new message carries the job's nonce. Jobs this process is still showing live are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from bot.core.tasks import PassLoop
from bot.discord_ui.presenter import DiscordPresenter
from bot.scheduler import Clock
from bot.storage import JobKind, Storage

_log = logging.getLogger(__name__)
IDLE_CHECK_S = 300.0  # without a known due time, look again this often (a write elsewhere may owe one)


class Outbox:
    def __init__(self, storage: Storage, presenter: DiscordPresenter, clock: Clock, *,
                 kinds: Sequence[JobKind] | None = None) -> None:
        self._storage = storage
        self._kinds = kinds  # the jobs its feature shows; another feature delivers its own kinds
        self._presenter = presenter
        self._clock = clock
        self._loop = PassLoop("imagine-outbox", self._pass, clock.sleep, idle_s=IDLE_CHECK_S)

    def start(self) -> None:
        self._loop.start()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let a delivery under way finish (see ``PassLoop.stop``)."""
        await self._loop.stop(timeout_s)

    def wake(self) -> None:
        """Look for due deliveries now (a job just failed an attempt, say)."""
        self._loop.wake()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.time(), UTC)

    async def deliver_due(self) -> int:
        """Try every owed delivery that is due and not shown live; return how many were tried."""
        tried = 0
        for stored in await self._storage.owed_deliveries(self._now(), kinds=self._kinds):
            if self._presenter.is_live(stored.id):
                continue
            tried += 1
            await self._presenter.redeliver(stored)
        return tried

    async def _pass(self) -> float | None:
        """Try what is due; return the seconds until the next owed delivery falls due (None: none is known)."""
        try:
            await self.deliver_due()
            due = await self._storage.next_delivery_due(kinds=self._kinds)
        except Exception:  # storage trouble: try again later rather than stop delivering for good
            _log.exception("the outbox could not look for owed deliveries")
            return None
        return None if due is None else (due - self._now()).total_seconds()
