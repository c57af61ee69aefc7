"""The retention purge loop: purge what ``retention:`` no longer keeps, then sleep until the next run.

Runs are ``retention.purge_interval_s`` apart, or sooner when an interaction token falls due (tokens are
credentials: they are cleared within a minute of expiring, not an interval later; a token stored while
the loop sleeps cannot fall due before it wakes, since it never sleeps longer than a token's lifetime).
The database work runs through the async engine in small batches and files are removed in a worker
thread (``Storage.purge``), so the event loop never waits on a purge. Time comes from ``Services.clock``.
A failed run is logged and tried again at the next interval; it never stops the loop.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

from bot.core.config import RetentionConfig
from bot.core.config_store import ConfigStore
from bot.core.tasks import PassLoop
from bot.scheduler import Clock
from bot.storage import PurgeReport, RetentionPolicy, Storage

_log = logging.getLogger(__name__)
MIN_WAIT_S = 60.0  # at most one run a minute, however many tokens fall due


def policy_of(settings: RetentionConfig) -> RetentionPolicy:
    def days(value: float | None) -> timedelta | None:
        return None if value is None else timedelta(days=value)

    return RetentionPolicy(images_after=days(settings.images_days), jobs_after=days(settings.jobs_days),
                           tokens_after=timedelta(minutes=settings.interaction_token_minutes))


class Purger:
    def __init__(self, storage: Storage, config: ConfigStore, clock: Clock) -> None:
        self._storage = storage
        self._config = config
        self._clock = clock
        # A purge is stopped between runs, never in the middle of one: a cancel mid-query strands a database
        # connection that holds SQLite's write lock, and the next process on the same data waits it out.
        self._loop = PassLoop("retention-purge", self._run_once, clock.sleep, idle_s=math.inf)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def purge_once(self) -> PurgeReport:
        """One purge under the running config."""
        report = await self._storage.purge(policy_of(self._config.current.retention))
        if report:
            _log.info("retention purge: %d result image(s), %d input image(s), %d token(s), %d job record(s)",
                      report.result_images, report.input_images, report.tokens, report.jobs)
        return report

    async def next_wait_s(self) -> float:
        """Seconds until the next run: the interval, or sooner when the next token falls due (at least a
        minute). With no token stored, a token's lifetime: none stored meanwhile can fall due any sooner."""
        settings = self._config.current.retention
        lifetime = timedelta(minutes=settings.interaction_token_minutes)
        now = datetime.fromtimestamp(self._clock.time(), UTC)
        due = await self._storage.next_token_expiry(lifetime) or now + lifetime
        return max(MIN_WAIT_S, min(settings.purge_interval_s, (due - now).total_seconds()))

    async def _run_once(self) -> float:
        """One run; returns the seconds until the next."""
        try:
            await self.purge_once()
            return await self.next_wait_s()
        except Exception:  # storage trouble: try again later rather than stop purging for good
            _log.exception("the retention purge failed; it runs again in retention.purge_interval_s")
            return self._config.current.retention.purge_interval_s
