"""A lease in Redis: one holder at a time, for ``ttl_s`` unless renewed. The bot's hot standby is elected by one.

The key holds the holder's id and expires on its own: a holder that dies loses the lease ``ttl_s`` later at
most, and another takes it. Renewing and releasing compare the holder first (one Lua script each), so a holder
whose lease already passed to another never extends or deletes the other's. After a Redis restart the key is
gone; the holder that renews first takes it again (the others find it held).
"""

from __future__ import annotations

from redis.asyncio import Redis

_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
if not holder then
    if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """``holder``'s claim on ``key``. Redis errors reach the caller: it decides what an outage means to it."""

    def __init__(self, redis: Redis, key: str, *, holder: str, ttl_s: float) -> None:
        self.redis, self.key, self.holder, self.ttl_s = redis, key, holder, ttl_s

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (or keep it if this holder does); True when held now."""
        return await self.renew()

    async def renew(self) -> bool:
        """Extend the lease by ``ttl_s`` if this holder has it, or take it if nobody does; False when another has it."""
        held = await self.redis.eval(_RENEW, 1, self.key, self.holder, str(self._ttl_ms))
        return bool(held)

    async def release(self) -> None:
        """Give the lease up at once (a clean stop), if this holder still has it."""
        await self.redis.eval(_RELEASE, 1, self.key, self.holder)

    async def holder_now(self) -> str | None:
        value = await self.redis.get(self.key)
        return value.decode() if isinstance(value, bytes) else value
