"""Token buckets that outlive the process: the scheduler's buckets mirrored in Redis (``executor.redis_url`` set).

Without it a restart, or a hot standby's takeover, would refill every bucket and hand a flood a fresh burst.
Admission stays synchronous and in memory, and the buckets in memory stay the authority (one bot process is
active at a time, by the standby lease): this module only copies them. Each take notes the bucket's level; a task
on the event loop writes the noted levels at once, in one pipeline, each key expiring when its bucket would be
full again (a full bucket is the same as none, so full buckets leave Redis by themselves). A level carries a
wall-clock stamp, since a monotonic one means nothing after a restart or on another machine. ``Scheduler.start``
loads every kept level before the bot serves a command.

Redis out of reach never blocks or fails admission: a failed load or write is logged once (and its end once), and
the bot carries on with its buckets in memory; levels that could not be written are tried again with the next
write, and once more at shutdown. Redis is only ever called from the event loop: admission notes levels on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.scheduler.limits import BucketLevel
from generation.config import ExecutorConfig
from generation.remote.keys import Keys, connect, where

_log = logging.getLogger(__name__)
LOAD_CHUNK = 1000  # keys per MGET at start-up


class RedisBucketMirror:
    """A ``bot.scheduler.limits.BucketStore`` in Redis under the namespace (``imagine:<namespace>:bucket:...``)."""

    def __init__(self, redis: Redis, keys: Keys, *, redis_where: str) -> None:
        self._redis, self._keys, self._where = redis, keys, redis_where
        self._pending: dict[str, BucketLevel] = {}  # key -> latest level not yet written
        self._writer: asyncio.Task[None] | None = None
        self._failing = False  # said once per outage

    @classmethod
    def from_config(cls, executor: ExecutorConfig) -> RedisBucketMirror | None:
        """The mirror for this config: None without ``redis_url`` (buckets stay in memory alone)."""
        if not executor.redis_url:
            return None
        return cls(connect(executor.redis_url), Keys(executor.redis_namespace), redis_where=where(executor.redis_url))

    def taken(self, kind: str, key: object, level: BucketLevel) -> None:
        ids = _ids_of(key)
        if ids is None:
            _log.warning("rate limits: a %s bucket's key %r cannot be kept in Redis", kind, key)
            return
        self._pending[self._keys.bucket(kind, ids)] = level
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the loop: never call Redis from here; the next write or close takes it
            return
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_pending(), name="bucket-mirror")

    async def _write_pending(self) -> None:
        while self._pending:  # takes noted during a write go in the next one
            batch, self._pending = self._pending, {}
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for name, level in batch.items():
                        ttl_ms = math.ceil(level.seconds_to_full() * 1000)
                        if ttl_ms > 0:
                            pipe.set(name, _encode(level), px=ttl_ms)
                        else:
                            pipe.delete(name)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                for name, level in batch.items():
                    self._pending.setdefault(name, level)  # a newer level noted meanwhile wins
                self._say_failing(f"could not write token buckets to Redis at {self._where} ({exc}); they stay "
                                  "in memory, and a restart now would refill them")
                return
            if self._failing:
                self._failing = False
                _log.info("rate limits: token buckets are mirrored to Redis at %s again", self._where)

    async def load(self) -> list[tuple[str, object, BucketLevel]]:
        """Every level kept (expired ones are gone: their buckets are full); none when Redis is out of reach."""
        try:
            names = [name async for name in self._redis.scan_iter(match=self._keys.buckets_pattern, count=LOAD_CHUNK)]
            values: list[bytes | str | None] = []
            for start in range(0, len(names), LOAD_CHUNK):
                values += await self._redis.mget(names[start:start + LOAD_CHUNK])
        except (RedisError, OSError) as exc:
            self._say_failing(f"could not load token buckets from Redis at {self._where} ({exc}); they start full, "
                              "in memory")
            return []
        levels: list[tuple[str, object, BucketLevel]] = []
        for name, value in zip(names, values, strict=True):
            found = self._keys.bucket_of(name.decode() if isinstance(name, bytes) else str(name))
            level = _decode(value) if value is not None else None
            if found is None or level is None:
                continue  # expired since the scan, or not ours to read
            kind, ids = found
            levels.append((kind, ids[0] if len(ids) == 1 else ids, level))
        return levels

    async def close(self) -> None:
        """Finish the write in flight, write what is still noted (unless Redis is known to be out of reach: a
        shutdown does not wait out an outage), and let go of the connection."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._pending and not self._failing:
            await self._write_pending()
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()

    def _say_failing(self, why: str) -> None:
        if not self._failing:
            _log.warning("rate limits: %s", why)
        self._failing = True


def _ids_of(key: object) -> tuple[int, ...] | None:
    """A bucket's key as Redis keeps it: a guild's lane (an int) or a user's (lane, user)."""
    if isinstance(key, int):
        return (key,)
    if isinstance(key, tuple) and key and all(isinstance(part, int) for part in key):
        return tuple(key)
    return None


def _encode(level: BucketLevel) -> str:
    return json.dumps({"tokens": level.tokens, "wall": level.wall, "rate": level.rate, "capacity": level.capacity})


def _decode(value: bytes | str) -> BucketLevel | None:
    try:
        fields = json.loads(value)
        level = BucketLevel(float(fields["tokens"]), float(fields["wall"]), float(fields["rate"]),
                            float(fields["capacity"]))
    except (ValueError, KeyError, TypeError):
        return None
    finite = all(math.isfinite(part) for part in (level.tokens, level.wall, level.rate, level.capacity))
    return level if finite and level.rate > 0 and level.capacity > 0 else None
