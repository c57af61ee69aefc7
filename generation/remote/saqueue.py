"""SAQ, fitted to a worker that owns its queue and must outlive Redis outages.

``TolerantQueue`` is SAQ's Redis queue whose dequeue waits out a lost connection: SAQ's worker loop would
otherwise start its next dequeue at once, and against a Redis that refuses connections that is a busy loop
on a core the GPU's feeder needs. ``QueueWorker`` is SAQ's worker without its own signal handlers (the worker
process drains on SIGTERM itself, after telling the bot) and with only the upkeep a one-worker queue needs.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError
from saq import Job, Worker
from saq.queue.redis import RedisQueue
from saq.types import Context

from generation.remote.keys import DEQUEUE_BLOCK_S

_log = logging.getLogger(__name__)


class TolerantQueue(RedisQueue):
    """A SAQ Redis queue whose dequeue returns None (after a pause) while Redis cannot be reached."""

    _reported = False

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:  # noqa: ASYNC109 (SAQ's)
        try:
            job = await super().dequeue(timeout=timeout, poll_interval=poll_interval)
        except (RedisError, OSError) as exc:
            if not self._reported:
                _log.warning("queue %s: Redis unreachable (%s); waiting for it", self.name, exc)
                self._reported = True
            await asyncio.sleep(DEQUEUE_BLOCK_S)
            return None
        if self._reported:
            _log.info("queue %s: Redis answers again", self.name)
            self._reported = False
        return job


class QueueWorker(Worker[Context]):
    """SAQ's worker for one process that serves one queue, one batch at a time."""

    SIGNALS = []  # noqa: RUF012 (SAQ's class attribute) - the process handles SIGTERM/SIGINT: it announces its drain first

    async def upkeep(self) -> list[asyncio.Task[None]]:
        """Only the abort check. Nothing is scheduled on a worker's own queue, the bot watches heartbeats for
        stuck batches, and SAQ's other upkeep loops sleep up to a minute, which would hold up a drain."""

        async def check_aborts() -> None:
            period = self.timers["abort"]
            while not self.event.is_set():
                try:
                    await self.abort(period)
                except (RedisError, OSError):
                    pass  # the dequeue reports outages; the next round tries again
                except Exception:
                    _log.exception("abort check failed")
                await asyncio.sleep(period)

        return [asyncio.create_task(check_aborts(), name="saq-abort-check")]
