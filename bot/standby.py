"""A hot standby (``bot.standby: true``): of the bot processes sharing one database and one Redis, the one that
holds a lease in Redis is active; the others wait, without connecting to Discord, and one takes over within a
lease period (``bot.standby_lease_s``, 5 s by default) of the active one dying.

The active process renews its lease three times a period. It steps down (drains and exits with code 4, for
its supervisor to start it again, as a standby) when another process holds the lease, or when it could not
renew for a whole period: by then it must assume another took over, and two bots answering one Discord
application would show everything twice. Everything a takeover needs is in the shared database (PostgreSQL
for processes on several machines): the new active process resumes queued and running jobs as any restart does.
A clean stop (SIGTERM) releases the lease at once, so a standby takes over without waiting for it to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from generation.remote.keys import connect, where
from generation.remote.lease import Lease

_log = logging.getLogger(__name__)
EXIT_STEPPED_DOWN = 4


class Standby:
    """Waits to become the active bot process, then keeps the lease while it runs."""

    def __init__(self, lease: Lease, *, redis_where: str, say: Callable[[str], None]) -> None:
        self._lease, self._where, self._say = lease, redis_where, say
        self.stepped_down = False

    @classmethod
    def from_url(cls, url: str, namespace: str, lease_s: float, *, say: Callable[[str], None]) -> Standby:
        holder = f"{socket.gethostname()}-{os.getpid()}"
        lease = Lease(connect(url), f"imagine:{namespace}:active-bot", holder=holder, ttl_s=lease_s)
        return cls(lease, redis_where=where(url), say=say)

    async def wait_until_active(self, stop: asyncio.Event) -> bool:
        """Poll for the lease until it is held (True) or ``stop`` is set (False), saying once why it waits."""
        said: str | None = None
        while not stop.is_set():
            try:
                if await self._lease.acquire():
                    _log.info("active bot process (lease %s held by %s)", self._lease.key, self._lease.holder)
                    return True
                why = "another bot process is active; this one takes over when it stops"
            except (RedisError, OSError) as exc:
                why = f"cannot reach Redis at {self._where} ({exc}) to learn which bot process is active; retrying"
            if why != said:
                self._say(f"standby: {why}")
                said = why
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._lease.ttl_s / 5)
        return False

    async def hold(self, step_down: Callable[[], Awaitable[None]]) -> None:
        """Renew the lease until cancelled; when it is lost, call ``step_down`` (which stops the bot)."""
        period = self._lease.ttl_s
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(period / 3)
            try:
                if await self._lease.renew():
                    last_ok = time.monotonic()
                    continue
                why = "another bot process holds the lease"
            except (RedisError, OSError) as exc:
                if time.monotonic() - last_ok < period:
                    continue  # a blip: the lease outlives it
                why = f"the lease could not be renewed for {period:g} s ({exc})"
            _log.error("stepping down: %s; queued and running jobs stay stored for the active process", why)
            self.stepped_down = True
            await step_down()
            return

    async def release(self) -> None:
        try:
            if not self.stepped_down:
                await self._lease.release()
        except (RedisError, OSError) as exc:
            _log.warning("could not release the lease (%s); a standby takes over once it expires", exc)
        finally:
            await self._lease.redis.aclose()
