"""One batch through the cluster: a free worker, its SAQ queue, and what to do when that worker fails it.

``BatchRun.run`` hands the batch to a worker (``WorkerPool.acquire``), waits for its output, and returns one
outcome per request as a local executor would. Each hand-over is an attempt with its own SAQ job key, so a
late answer from an abandoned attempt is never taken for the current one: a request ends once, whatever a
worker that was given up on does later (it is aborted, and stops at its next step).

- The worker dies mid-batch (its heartbeat stops): the batch goes to another worker, once; the requesters'
  status says it moved. A second death fails the batch (``WorkerLost``). A worker that died before starting
  it does not count: the batch just goes elsewhere.
- The batch's record vanished (Redis restarted and forgot it): it is sent again, as the bot still holds it.
- The worker declined it (it does not serve the model, or the model will not load there): another worker is
  tried; with none left, the batch fails saying so.
- Some requests ran out of GPU memory even one image at a time: they are tried once on another worker.
- Redis cannot be reached: the attempt waits (the pool refuses new requests meanwhile) and goes on after.
- The awaiting task is cancelled: the job is aborted through SAQ; the worker stops at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq import Job, Status
from saq.queue.redis import RedisQueue

from generation.errors import FixableFailure, GenerationFailed, ImagineError, ModelLoadError, OutOfMemory, WorkerLost
from generation.interface import CancelToken, Outcome, ProgressCallback
from generation.remote.keys import Keys
from generation.remote.pool import ABORT_TTL_S, NoWorker, WorkerPool
from generation.remote.wire import (
    Declined,
    StoredResult,
    dumps,
    image_of,
    loads,
    output_from_json,
    progress_from_json,
    request_to_json,
)
from generation.request import GenerationRequest, GenerationResult, ProgressEvent, denoising_steps

_log = logging.getLogger(__name__)
POLL_S = 0.25  # between looks at an attempt (its end is also announced: this is the fallback)
CANCEL_CHECK_S = 0.05  # between looks at the members' cancel flags
MAX_RESENDS = 3  # times one batch is sent again after Redis forgot it, before it fails
CANCEL_SETTLE_S = 10.0  # how long a cancelled attempt waits for the worker to let go before giving up on it
LOST_TEXT = "The GPU running this request stopped, and so did the one it moved to; please try again."
NO_WORKER_TEXT = "No GPU here can run model {model} right now; try another model, or tell a moderator."


@dataclass(frozen=True)
class Lost:
    started: bool  # the worker had begun the batch (a death before that does not count)


@dataclass(frozen=True)
class Resend:
    why: str


@dataclass(frozen=True)
class Crashed:
    error: str


Ended = list[StoredResult | ImagineError] | Declined | Lost | Resend | Crashed


class Channels:
    """Where an attempt's messages (progress, its end) are delivered: the executor's one pub/sub reader."""

    def __init__(self) -> None:
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {}

    def add(self, channel: str, handler: Callable[[dict[str, Any]], None]) -> None:
        self._handlers[channel] = handler

    def remove(self, channel: str) -> None:
        self._handlers.pop(channel, None)

    def deliver(self, channel: str, message: dict[str, Any]) -> None:
        handler = self._handlers.get(channel)
        if handler is not None:
            handler(message)


class BatchRun:
    def __init__(self, redis: Redis, keys: Keys, pool: WorkerPool, channels: Channels, *, number: str,
                 batch: Sequence[GenerationRequest], on_progress: ProgressCallback | None,
                 tokens: Sequence[CancelToken], ttl_s: float, exclude: frozenset[str] = frozenset()) -> None:
        self._redis, self._keys, self._pool, self._channels = redis, keys, pool, channels
        self._number, self._batch, self._on_progress, self._tokens = number, list(batch), on_progress, list(tokens)
        self._ttl_ms = int(ttl_s * 1000)
        self._tried: set[str] = set(exclude)
        self._moved = False
        self._attempts = 0
        self._declined: Declined | None = None

    @property
    def model(self) -> str:
        return self._batch[0].model or ""

    async def run(self) -> list[Outcome]:
        lost = resent = 0
        while True:
            self._attempts += 1
            key = f"{self._pool.session}-{self._number}-{self._attempts}"
            try:
                worker = await self._pool.acquire(self.model, key, exclude=self._tried)
            except NoWorker:
                return self._no_worker()
            ended = False
            try:
                end = await self._attempt(worker.id, key)
                ended = not isinstance(end, Lost)
            finally:
                self._pool.release(worker.id, ended=ended)
            if isinstance(end, Lost) and not end.started and self._pool.alive(worker.id):
                # Declared gone and back before it took the batch (which emptied its queue): it never ran there,
                # so that worker may have it again.
                resent += 1
                if resent > MAX_RESENDS:
                    return [WorkerLost(LOST_TEXT) for _ in self._batch]
                _log.warning("batch %s: GPU worker %s was declared gone and came back before it took the batch; "
                             "sending it again", key, worker.id)
            elif isinstance(end, Lost):
                self._tried.add(worker.id)
                if not end.started:
                    continue
                lost += 1
                if lost > 1:
                    return [WorkerLost(LOST_TEXT) for _ in self._batch]
                _log.warning("batch %s: GPU worker %s stopped mid-batch; moving it to another worker", key, worker.id)
                self._moved = True
                self._progress(ProgressEvent(step=0, total=denoising_steps(self._batch[0]), moved=True))
            elif isinstance(end, Resend):
                resent += 1
                if resent > MAX_RESENDS:
                    return [WorkerLost(LOST_TEXT) for _ in self._batch]
                _log.warning("batch %s: %s; sending it again", key, end.why)
            elif isinstance(end, Declined):
                _log.warning("batch %s: GPU worker %s declined it: %s", key, worker.id, end.message)
                self._tried.add(worker.id)
                self._declined = end
            elif isinstance(end, Crashed):
                _log.error("batch %s: GPU worker %s failed: %s", key, worker.id, end.error)
                last = (end.error.strip().splitlines() or ["an unexpected error"])[-1]
                return [GenerationFailed(f"the GPU worker failed: {last}") for _ in self._batch]
            else:
                return await self._finish(key, worker.id, end)

    def _no_worker(self) -> list[Outcome]:
        declined = self._declined
        if declined is not None and declined.kind == "load":
            # The loader's own text names paths and sources: for the log, under a reference (the scheduler's).
            return [ModelLoadError(f"model {self.model}: {declined.message}") for _ in self._batch]
        return [FixableFailure(NO_WORKER_TEXT.format(model=self.model)) for _ in self._batch]

    async def _finish(self, key: str, worker_id: str, stored: list[StoredResult | ImagineError]) -> list[Outcome]:
        outcomes: list[Outcome] = [await self._result(item) if isinstance(item, StoredResult) else item
                                   for item in stored]
        retry = [index for index, outcome in enumerate(outcomes) if isinstance(outcome, OutOfMemory)
                 and not self._tokens[index].cancelled]
        others = self._pool.serving(self.model, exclude=self._tried | {worker_id})
        if retry and others:
            # Out of memory even one image at a time on that GPU: another may have more to give.
            _log.info("batch %s: %d request(s) ran out of GPU memory on %s; trying another worker", key, len(retry),
                      worker_id)
            again = BatchRun(self._redis, self._keys, self._pool, self._channels, number=f"{self._number}m",
                             batch=[self._batch[i] for i in retry], on_progress=None,
                             tokens=[self._tokens[i] for i in retry], ttl_s=self._ttl_ms / 1000,
                             exclude=frozenset(self._tried | {worker_id}))
            for index, outcome in zip(retry, await again.run(), strict=True):
                if not isinstance(outcome, OutOfMemory):  # a result, or another reason: that one stands
                    outcomes[index] = outcome
        return outcomes

    # --- one attempt -----------------------------------------------------------------------------
    async def _attempt(self, worker_id: str, key: str) -> Ended:
        queue = self._pool.queue(worker_id)
        done = asyncio.Event()
        channel = self._keys.events(key)
        self._channels.add(channel, lambda message: self._on_message(message, done))
        job: Job | None = None
        life = self._pool.life(worker_id)
        try:
            job = await self._send(queue, key)
            if job is None:
                return Resend("Redis could not be reached to send it")
            return await self._wait(job, worker_id, life, done)
        except asyncio.CancelledError:
            if job is not None:
                await self._abort(job, "cancelled", worker_id)
            raise
        finally:
            self._channels.remove(channel)

    async def _send(self, queue: RedisQueue, key: str) -> Job | None:
        """Store the requests and put the job on the worker's queue; waits out an outage (None: gave up)."""
        payload = self._keys.payload(key)
        data = dumps({"requests": [request_to_json(request) for request in self._batch]})
        for _ in range(120):
            try:
                await self._redis.set(payload, data, px=self._ttl_ms)
                await self._push_cancels(key, set())
                job = await queue.enqueue("run_batch", key=key, timeout=0, retries=1, ttl=int(self._ttl_ms / 1000),
                                          payload=payload)
                return job if job is not None else await queue.job(key)
            except (RedisError, OSError):
                await asyncio.sleep(1.0)
        return None

    def _on_message(self, message: dict[str, Any], done: asyncio.Event) -> None:
        if message.get("kind") == "done":
            done.set()
        elif message.get("kind") == "progress":
            event = progress_from_json(message)
            self._progress(replace(event, moved=self._moved) if self._moved else event)

    def _progress(self, event: ProgressEvent) -> None:
        if self._on_progress is not None:
            self._on_progress(event)

    async def _wait(self, job: Job, worker_id: str, life: int, done: asyncio.Event) -> Ended:
        pushed: set[int] = set()
        started = False
        while True:
            # A cancel is a flag the scheduler sets: looked at often (cheap), sent to the worker when new.
            for _ in range(round(POLL_S / CANCEL_CHECK_S)):
                if done.is_set():
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), CANCEL_CHECK_S)
                with contextlib.suppress(RedisError, OSError):
                    await self._push_cancels(job.key, pushed)
            try:
                output, record = await self._look(job)
            except (RedisError, OSError):
                continue  # an outage: wait it out (new requests are refused meanwhile)
            if output is not None:
                return output
            if record is None:
                return Resend("its record is gone from Redis (a restart?)")
            started = started or record.status in (Status.ACTIVE, Status.ABORTING)
            if record.status is Status.FAILED:
                return Crashed(record.error or "an unexpected error")
            if record.status in (Status.COMPLETE, Status.ABORTED):
                return Resend(f"the worker ended it without a result ({record.status.value})")
            if not self._pool.alive(worker_id, life):  # gone, or gone and back: its queue was emptied meanwhile
                await self._abort(record, "worker lost", worker_id)
                return Lost(started=started)

    async def _push_cancels(self, key: str, pushed: set[int]) -> None:
        new = [index for index, token in enumerate(self._tokens) if token.cancelled and index not in pushed]
        if new:
            cancelled = self._keys.cancelled(key)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.sadd(cancelled, *new)
                pipe.pexpire(cancelled, self._ttl_ms)
                await pipe.execute()
            pushed.update(new)

    async def _look(self, job: Job) -> tuple[Ended | None, Job | None]:
        # One transaction: the worker stores the output before SAQ marks the job complete, so a record that
        # says complete with no output beside it means there is none.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._keys.output(job.key))
            pipe.get(job.id)
            output, record = await pipe.execute()
        queue = job.get_queue()
        if output is None:
            return None, queue.deserialize(record)
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._keys.output(job.key), self._keys.payload(job.key),
                                     self._keys.cancelled(job.key))
        return output_from_json(loads(output)), queue.deserialize(record)

    async def _abort(self, job: Job, why: str, worker_id: str) -> None:
        """Abort through SAQ (the worker stops at its next step); on a cancel, wait briefly for it to let go, so
        that its slot is free when the cancellation lands (as a local executor waits for its thread)."""
        queue = job.get_queue()
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await queue.abort(job, why, ttl=ABORT_TTL_S)
            if why != "cancelled":
                return
            async with asyncio.timeout(CANCEL_SETTLE_S):
                while self._pool.alive(worker_id):
                    record = await queue.job(job.key)
                    if record is None or record.status in (Status.ABORTED, Status.COMPLETE, Status.FAILED):
                        return
                    await asyncio.sleep(POLL_S)

    async def _result(self, stored: StoredResult) -> Outcome:
        """The images of one stored result, fetched and decoded; gone ones fail that request alone."""
        keys = [place["key"] for place in stored.images if "key" in place]
        try:
            found = dict(zip(keys, await self._redis.mget(keys), strict=True)) if keys else {}
        except (RedisError, OSError) as exc:
            return GenerationFailed(f"the result images could not be fetched from Redis: {exc}")
        data: list[bytes | None] = []
        for place in stored.images:
            if "key" in place:
                data.append(found.get(place["key"]))
            else:
                data.append(await asyncio.to_thread(_take_file, Path(place["file"])))
        if any(item is None for item in data):
            return GenerationFailed("the result images expired before the bot took them")
        images = await asyncio.to_thread(lambda: [image_of(item) for item in data if item is not None])
        with contextlib.suppress(RedisError, OSError):
            if keys:
                await self._redis.delete(*keys)  # saved by the bot from here on: Redis need not hold them
        return GenerationResult(request=stored.request, images=images, seeds=stored.seeds, timings=stored.timings,
                                nsfw=stored.nsfw, warnings=stored.warnings, model_sampler=stored.model_sampler)


def _take_file(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    with contextlib.suppress(OSError):
        path.unlink()
    return data
