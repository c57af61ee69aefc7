"""The bot's view of its GPU workers: who is alive (heartbeats), who is free, and which one a batch should go to.

``WorkerPool`` reads every worker's heartbeat twice per heartbeat period. A worker whose heartbeat expired
(``MISSED_BEATS`` periods of silence: SIGKILL, a crashed host, a cut network) is dead: it leaves the pool, its
queue is cleared, and whoever waits on one of its batches hears it at once. After Redis was out of reach, or
restarted (its epoch key is gone), nobody is declared dead for one heartbeat TTL: every worker needs a beat to
show up again, and an outage is not a crash.

A worker is free when it is alive, not draining, and runs nothing for this bot. A worker still busy with a batch
this bot no longer waits for (one from the bot's previous life: its database re-dispatches those) gets that
batch aborted, so it comes free within a step. ``acquire`` picks, among free workers serving the model, one
with the model loaded, then the fastest (measured seconds per cost unit), then the one with most free memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Collection

from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq.queue.redis import RedisQueue

from generation.remote.keys import MISSED_BEATS, Keys
from generation.remote.wire import WorkerInfo, loads, worker_from_json

_log = logging.getLogger(__name__)
RECENT_KEYS = 1000
ABORT_TTL_S = 60  # how long an abort mark outlives the abort (a worker out of touch meanwhile still sees it)


class NoWorker(Exception):
    """No live worker serves the model (or every one that does was already tried for this batch)."""


class WorkerPool:
    def __init__(self, redis: Redis, keys: Keys, *, heartbeat_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._redis, self._keys, self._heartbeat_s, self._clock = redis, keys, heartbeat_s, clock
        self.session = uuid.uuid4().hex[:12]  # this bot process: its job keys begin with it
        self._workers: dict[str, WorkerInfo] = {}
        self._queues: dict[str, RedisQueue] = {}
        self._assigned: dict[str, str] = {}  # worker id -> the job key it runs for this bot
        # Job keys whose end this bot has seen (a worker's next beat may still name one: it is free all the same),
        # and keys of batches it aborted (never aborted twice); bounded, as only recent ones can still show up.
        self._ended: deque[str] = deque(maxlen=RECENT_KEYS)
        self._aborted: deque[str] = deque(maxlen=RECENT_KEYS)
        # How often each worker was declared gone. One that stalls past its heartbeats is forgotten (its queue
        # emptied) and comes back with its next beat; a job sent before that is lost even though it "is alive".
        self._forgotten: Counter[str] = Counter()
        self._reachable: bool | None = None
        self._reason: str | None = "the workers' queue has not been reached yet"
        self._reachable_since = clock()
        self._epoch: str | None = None
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None

    # --- what the scheduler reads ----------------------------------------------------------------
    @property
    def slots(self) -> int:
        """Workers that can take a batch (alive, not draining), busy or not: as many batches may be in flight.
        Zero while Redis is out of reach: queued jobs wait rather than start towards a queue nobody can reach."""
        if self._reachable is not True:
            return 0
        return sum(not info.draining for info in self._workers.values())

    @property
    def unavailable(self) -> str | None:
        """Why new batches cannot be handed to workers now (Redis out of reach), for logs; None when they can."""
        return self._reason if self._reachable is False else None

    @property
    def reachable(self) -> bool:
        return self._reachable is True

    def on_change(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def alive(self, worker_id: str, life: int | None = None) -> bool:
        """Whether the worker is in the pool; with ``life`` (from ``life()`` when a job was sent), also that it
        has not been declared gone since, which emptied its queue of that job."""
        return worker_id in self._workers and (life is None or self._forgotten[worker_id] == life)

    def life(self, worker_id: str) -> int:
        return self._forgotten[worker_id]

    def workers(self) -> list[WorkerInfo]:
        return list(self._workers.values())

    def queue(self, worker_id: str) -> RedisQueue:
        queue = self._queues.get(worker_id)
        if queue is None:
            queue = self._queues[worker_id] = RedisQueue(self._redis, name=self._keys.queue_name(worker_id))
        return queue

    # --- life ------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            await self.refresh()
            self._task = asyncio.create_task(self._watch(), name="imagine-worker-pool")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s / 2)
            try:
                await self.refresh()
            except Exception:  # the pool's eyes must stay open whatever one round met
                _log.exception("worker pool refresh failed")

    async def changed(self) -> None:
        """Wait for the next change: a worker joined, left, came free or changed state, or Redis came or went."""
        await self._changed.wait()

    def _notify(self, *, listeners: bool) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        if listeners:
            for callback in list(self._listeners):
                callback()

    # --- heartbeats ------------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Read the heartbeats once and apply what changed."""
        before = (self.slots, self.unavailable)
        try:
            ids, epoch = await self._read_registry()
            beats = await self._redis.mget([self._keys.worker(worker_id) for worker_id in ids]) if ids else []
        except (RedisError, OSError) as exc:
            if self._reachable is not False:
                _log.warning("cannot reach Redis for the GPU workers (%s); new requests are refused, queued ones "
                             "wait", exc)
                self._reason = f"Redis cannot be reached ({exc})"
            self._reachable = False
            self._notify(listeners=before != (self.slots, self.unavailable))
            return
        now = self._clock()
        if self._reachable is not True or epoch != self._epoch:
            if self._reachable is False:
                _log.info("Redis answers again; the GPU workers take batches again")
            self._reachable, self._reason, self._reachable_since, self._epoch = True, None, now, epoch
        grace = now - self._reachable_since <= self._heartbeat_s * MISSED_BEATS
        found: dict[str, WorkerInfo] = {}
        for worker_id, beat in zip(ids, beats, strict=True):
            if beat is not None:
                found[worker_id] = worker_from_json(loads(beat))
        for worker_id, info in self._workers.items():
            if worker_id not in found and grace:
                found[worker_id] = info  # not declared dead while every worker is still beating its way back
        gone = [worker_id for worker_id in (set(self._workers) | set(ids)) - set(found)]
        for worker_id in gone:
            last = self._workers.get(worker_id)
            if last is not None and last.draining and worker_id not in ids:
                _log.info("GPU worker %s left the pool (drained)", worker_id)
            elif last is not None:
                _log.warning("GPU worker %s is gone (no heartbeat for %.1f s)", worker_id,
                             self._heartbeat_s * MISSED_BEATS)
            await self._forget(worker_id)
        for info in found.values():
            if info.busy is not None and info.busy not in self._assigned.values() and info.busy not in self._ended:
                await self._abort_foreign(info)
        changed = {key: (info.draining, info.busy, info.loaded) for key, info in found.items()} != {
            key: (info.draining, info.busy, info.loaded) for key, info in self._workers.items()}
        self._workers = found
        if changed or before != (self.slots, self.unavailable):
            self._notify(listeners=before != (self.slots, self.unavailable))

    async def _read_registry(self) -> tuple[list[str], str]:
        """The announced worker ids, and Redis's epoch: a mark this pool sets once, so a restart shows as a new one."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self._keys.workers)
            pipe.set(self._keys.epoch, uuid.uuid4().hex, nx=True)
            pipe.get(self._keys.epoch)
            members, _, epoch = await pipe.execute()
        return sorted(member.decode() for member in members), epoch.decode() if epoch is not None else ""

    async def _forget(self, worker_id: str) -> None:
        """A dead worker leaves the registry, and its queue with it (a batch waiting there goes elsewhere)."""
        name = self._keys.queue_name(worker_id)
        self._forgotten[worker_id] += 1
        with contextlib.suppress(RedisError, OSError):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.srem(self._keys.workers, worker_id)
                pipe.delete(*(f"saq:{name}:{part}" for part in ("queued", "active", "incomplete")))
                await pipe.execute()
        self._queues.pop(worker_id, None)

    async def _abort_foreign(self, info: WorkerInfo) -> None:
        key = info.busy
        if key is None or key in self._aborted:
            return
        self._aborted.append(key)
        _log.info("GPU worker %s runs batch %s, which this bot no longer waits for; aborting it", info.id, key)
        queue = self.queue(info.id)
        with contextlib.suppress(RedisError, OSError):
            job = await queue.job(key)
            if job is not None:
                await queue.abort(job, "abandoned", ttl=ABORT_TTL_S)

    # --- handing out workers ---------------------------------------------------------------------
    def _free(self) -> list[WorkerInfo]:
        return [info for info in self._workers.values()
                if not info.draining and info.id not in self._assigned
                and (info.busy is None or info.busy in self._ended)]

    def serving(self, model: str, exclude: Collection[str] = ()) -> list[WorkerInfo]:
        """Live workers that take batches (not draining) and serve ``model``, but for those in ``exclude``."""
        return [info for info in self._workers.values() if not info.draining and info.id not in exclude
                and (not info.served or model in info.served)]

    def lacks(self, model: str, exclude: Collection[str] = ()) -> bool:
        """Whether it is known that no worker can take ``model`` now: Redis answers, some workers take batches,
        and none of them (but those in ``exclude``) serves it. With none taking batches (all draining in a
        rolling restart, or none started yet) nothing is known: new ones are waited for."""
        active = any(not info.draining for info in self._workers.values())
        return self.reachable and active and not self.serving(model, exclude)

    def choose(self, model: str, exclude: Collection[str] = ()) -> WorkerInfo | None:
        if not self.reachable:
            return None
        candidates = [info for info in self._free() if info.id not in exclude and (not info.served or model in
                                                                                    info.served)]
        if not candidates:
            return None
        return min(candidates, key=lambda info: (model not in info.loaded, info.speed(model) or float("inf"),
                                                 -(info.free_vram or 0), info.id))

    async def acquire(self, model: str, key: str, exclude: Collection[str] = ()) -> WorkerInfo:
        """Wait for a free worker for ``model`` (not in ``exclude``) and hold it for job ``key``; raise NoWorker
        when Redis answers, workers are alive, and none of them (left) serves the model."""
        while True:
            chosen = self.choose(model, exclude)
            if chosen is not None:
                self._assigned[chosen.id] = key
                return chosen
            if self.lacks(model, exclude):
                raise NoWorker(model)
            await self.changed()

    def release(self, worker_id: str, *, ended: bool) -> None:
        """The batch attempt on ``worker_id`` is over for this bot: it ``ended`` there (an output, or its record
        gone), or this bot aborted it or gave up on the worker (a later heartbeat naming it gets it aborted)."""
        key = self._assigned.pop(worker_id, None)
        if key is not None:
            (self._ended if ended else self._aborted).append(key)
        self._notify(listeners=False)
