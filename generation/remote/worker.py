"""A GPU worker process: takes batches from its own SAQ queue on Redis and runs them with the same ``Runner``.

One process per GPU (``python -m generation.worker``). At start it loads and warms up the models it serves
(``Runner.prepare``, as the bot does locally), then announces itself with a heartbeat: its queue, its models
(served and loaded), its measured speed and, on CUDA, its free memory. The bot picks a free worker for each
batch and puts the batch on that worker's queue; the worker runs it through ``GpuExecutor`` (one thread owns
the models), publishes progress (and small previews), stores each result PNG in Redis with a TTL (or, when
large, in the shared folder), records what became of each request, and says so on the batch's channel.

Between denoising steps the batch stops when the bot aborts it (SAQ's abort) or the batch's record is gone
(Redis restarted: the bot sends it again), and a member stops when the bot marks it cancelled. A model it does
not serve, or one that will not load here, is declined with the reason, so the bot can try another worker.
SIGTERM (or SIGINT) drains: the heartbeat says so at once (the bot sends nothing new), the running batch
finishes, then the worker leaves the pool and exits; a second signal stops the batch at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq import Job
from saq.types import Context, PartialTimersDict

from generation.config import GenerationConfig
from generation.errors import ImagineError, ModelLoadError
from generation.executor import GpuExecutor
from generation.interface import CancelToken, Outcome
from generation.remote.keys import DEQUEUE_BLOCK_S, MISSED_BEATS, Keys, where
from generation.remote.saqueue import QueueWorker, TolerantQueue
from generation.remote.wire import (
    DONE_MESSAGE,
    Declined,
    StoredResult,
    WorkerInfo,
    declined_to_json,
    dumps,
    error_to_json,
    joined,
    loads,
    png_of,
    progress_to_json,
    request_from_json,
    result_to_json,
    warmed_to_json,
    worker_to_json,
)
from generation.request import GenerationRequest, GenerationResult, ProgressEvent, estimate_cost
from generation.warmup import Warmed

_log = logging.getLogger(__name__)
WATCH_S = 0.1  # how often a running batch looks for an abort or a cancelled member (between steps)
SPEED_SMOOTHING = 0.3
DRAIN_GRACE_S = 24 * 3600  # a drain waits for the running batch, however long it takes
# cast: SAQ's PartialTimersDict inherits its keys as required, though its constructor merges partial ones.
ABORT_CHECK = cast(PartialTimersDict, {"abort": 1})  # SAQ's own abort check, behind the batch's watcher (WATCH_S)


@dataclass(frozen=True)
class WorkerSettings:
    redis_url: str
    namespace: str = "imagine"
    heartbeat_s: float = 1.0
    served: tuple[str, ...] = ()  # empty: any model the config can load
    preload: tuple[str, ...] = ()  # loaded and measured before the worker announces itself
    shared_dir: str | None = None
    inline_result_bytes: int = 8 * 1024 * 1024
    result_ttl_s: float = 3600.0
    kill_at_step: int | None = None  # fault injection for tests: SIGKILL itself at this step of its first batch
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")

    @classmethod
    def from_config(cls, config: GenerationConfig, *, kill_at_step: int | None = None) -> WorkerSettings:
        """The executor section's settings (``redis_url`` must be set)."""
        executor = config.executor
        assert executor.redis_url is not None, "a worker needs executor.redis_url (or --redis)"
        return cls(redis_url=executor.redis_url, namespace=executor.redis_namespace, heartbeat_s=executor.heartbeat_s,
                   shared_dir=executor.shared_dir, inline_result_bytes=executor.inline_result_bytes,
                   result_ttl_s=executor.result_ttl_s, kill_at_step=kill_at_step)


class GpuWorker:
    """Serves one SAQ queue with one ``GpuExecutor``; ``serve()`` runs until drained."""

    def __init__(self, gpu: GpuExecutor, config: GenerationConfig, settings: WorkerSettings, *,
                 device: str, loaded_models: Callable[[], list[str]],
                 free_vram: Callable[[], int | None] = lambda: None) -> None:
        self._gpu, self._config, self._settings = gpu, config, settings
        self._device, self._loaded_models, self._free_vram = device, loaded_models, free_vram
        self._keys = Keys(settings.namespace)
        self._id = settings.worker_id
        self._redis: Redis | None = None
        self._loaded: tuple[str, ...] = ()
        self._measured: dict[str, Warmed] = {}
        self._speed: float | None = None
        self._busy: str | None = None
        self._draining = False
        self._beat_now = asyncio.Event()
        self._saq: QueueWorker | None = None
        self._running: asyncio.Task[list[Outcome]] | None = None
        self._redis_down = False

    @property
    def id(self) -> str:
        return self._id

    @property
    def redis(self) -> Redis:
        assert self._redis is not None, "serve() first"
        return self._redis

    def info(self) -> WorkerInfo:
        return WorkerInfo(id=self._id, queue=self._keys.queue_name(self._id), device=self._device,
                          host=socket.gethostname(), pid=os.getpid(), served=self._settings.served,
                          loaded=self._loaded, measured=dict(self._measured), seconds_per_cost=self._speed,
                          free_vram=self._free_vram(), draining=self._draining, busy=self._busy)

    # --- life ------------------------------------------------------------------------------------
    async def serve(self, redis: Redis, *, signals: bool = True) -> None:
        """Load, announce, take batches until drained, leave the pool. Raises ModelLoadError when none of the
        models to preload can be loaded (nothing could be served). ``signals``: SIGTERM and SIGINT drain it."""
        self._redis = redis
        await self._preload()
        self._clean_shared_dir()
        queue = TolerantQueue(redis, name=self._keys.queue_name(self._id))
        self._saq = QueueWorker(queue, functions=[("run_batch", self._run_batch), ("prepare_model", self._prepare)],
                                concurrency=1, dequeue_timeout=DEQUEUE_BLOCK_S, timers=ABORT_CHECK,
                                shutdown_grace_period_s=DRAIN_GRACE_S, id=self._id)
        loop = asyncio.get_running_loop()
        handled = (signal.SIGTERM, signal.SIGINT) if signals else ()
        for signum in handled:
            loop.add_signal_handler(signum, self.drain)
        heartbeat = asyncio.create_task(self._heartbeat(), name="worker-heartbeat")
        _log.info("worker %s serving %s on %s (queue %s at %s)", self._id, joined(self._settings.served) if
                  self._settings.served else "every configured model", self._device, queue.name,
                  where(self._settings.redis_url))
        try:
            await self._saq.start()  # returns once drained
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            await self._leave()

    def drain(self) -> None:
        """Take no new batch, finish the running one, then stop; a second call stops the running batch too."""
        if self._draining:
            _log.warning("worker %s: stopping the running batch at its next step", self._id)
            if self._running is not None:
                self._running.cancel()
            return
        _log.info("worker %s draining: finishing its batch, taking no new one", self._id)
        self._draining = True
        self._beat_now.set()  # tell the bot before anything else
        if self._saq is not None:
            self._saq.event.set()

    async def _preload(self) -> None:
        wanted = self._settings.preload or (self._config.default_model,)
        failures: list[str] = []
        for model in wanted:
            try:
                warmed = await self._gpu.prepare(model)
            except ImagineError as exc:
                _log.error("worker %s: model %s not loaded: %s", self._id, model, exc)
                failures.append(f"{model}: {exc}")
                continue
            self._measured[warmed.model] = warmed
            _log.info("worker %s: model %s ready on %s (%.3f s per cost unit)", self._id, warmed.model,
                      warmed.device, warmed.seconds_per_cost)
        self._loaded = tuple(self._loaded_models())
        if failures and len(failures) == len(wanted):
            raise ModelLoadError("no model could be loaded: " + "; ".join(failures))

    async def _heartbeat(self) -> None:
        ttl_ms = int(self._settings.heartbeat_s * MISSED_BEATS * 1000)
        while True:
            self._beat_now.clear()
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.set(self._keys.worker(self._id), dumps(worker_to_json(self.info())), px=ttl_ms)
                    pipe.sadd(self._keys.workers, self._id)
                    await pipe.execute()
                if self._redis_down:
                    _log.info("worker %s: Redis answers again; back in the pool", self._id)
                self._redis_down = False
            except (RedisError, OSError) as exc:
                if not self._redis_down:
                    _log.warning("worker %s: cannot reach Redis at %s (%s); retrying", self._id,
                                 where(self._settings.redis_url), exc)
                self._redis_down = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), self._settings.heartbeat_s)

    async def _leave(self) -> None:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._keys.worker(self._id))
                pipe.srem(self._keys.workers, self._id)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            _log.warning("worker %s: could not leave the pool cleanly (%s); its heartbeat expires instead",
                         self._id, exc)
        _log.info("worker %s stopped", self._id)

    # --- SAQ job functions -----------------------------------------------------------------------
    async def _prepare(self, ctx: Context, *, model: str) -> dict[str, Any]:
        """Load and measure ``model`` (the bot asks when no worker has its default model loaded)."""
        try:
            warmed = await self._gpu.prepare(model)
        except ImagineError as exc:
            return {"error": error_to_json(exc)}
        self._measured[warmed.model] = warmed
        self._loaded = tuple(self._loaded_models())
        self._beat_now.set()
        return {"warmed": warmed_to_json(warmed)}

    async def _run_batch(self, ctx: Context, *, payload: str) -> dict[str, Any]:
        job = ctx["job"]
        key = job.key
        data = await self.redis.get(payload)
        if data is None:  # the bot's copy is gone (Redis restarted); it sends the batch again
            _log.warning("batch %s: its requests are gone from Redis; skipped", key)
            return {"skipped": True}
        batch = [request_from_json(item) for item in loads(data)["requests"]]
        model = batch[0].model or self._config.default_model
        served = self._settings.served
        problem = f"this worker serves {joined(served)}, not {model}" if served and model not in served else None
        try:
            self._config.model(model)
        except ImagineError as exc:  # its config does not have it (or has it switched off): another one may
            problem = str(exc)
        if problem is not None:
            await self._store(job, declined_to_json(Declined("model", problem)))
            return {"declined": "model"}
        self._busy = key
        self._beat_now.set()
        tokens = [CancelToken() for _ in batch]
        await self._mark_cancelled(job.key, tokens)  # cancelled while queued: never started
        started = time.perf_counter()
        self._running = asyncio.ensure_future(self._gpu.run(batch, self._progress(key), cancel_tokens=tokens))
        watcher = asyncio.create_task(self._watch(job, tokens, self._running))
        try:
            outcomes = await self._running
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # SAQ's abort or the process stopping: SAQ records the end
            _log.info("batch %s stopped: the bot aborted it or its record is gone", key)
            return {"stopped": True}
        finally:
            watcher.cancel()
            self._running = None
            self._busy = None
            self._loaded = tuple(self._loaded_models())
            self._beat_now.set()
        if all(isinstance(outcome, ModelLoadError) for outcome in outcomes):
            await self._store(job, declined_to_json(Declined("load", str(outcomes[0]))))
            return {"declined": "load"}
        self._observe_speed(batch, outcomes, time.perf_counter() - started)
        encoded: list[dict[str, Any]] = []
        images: list[tuple[str, bytes]] = []
        for index, outcome in enumerate(outcomes):
            encoded.append(await self._encode(key, index, outcome, images))
        await self._store(job, {"outcomes": encoded}, images)
        for request, outcome in zip(batch, outcomes, strict=True):
            ended = "done" if isinstance(outcome, GenerationResult) else type(outcome).__name__
            _log.info("batch %s: %s %r (seed %s)", key, ended, request.prompt, request.seed)
        return {"stored": len(outcomes)}

    # --- helpers ---------------------------------------------------------------------------------
    def _progress(self, key: str) -> Callable[[ProgressEvent], None]:
        channel = self._keys.events(key)
        kill_at = self._settings.kill_at_step
        latest: list[ProgressEvent] = []
        sending: list[asyncio.Task[None]] = []

        async def send() -> None:
            try:
                while latest:  # only the newest step matters: a slow Redis never builds a backlog of old ones
                    event = latest.pop()
                    latest.clear()
                    with contextlib.suppress(RedisError, OSError):
                        await self.redis.publish(channel, dumps(progress_to_json(event)))
            except Exception:  # progress is a courtesy: the batch goes on without it
                _log.exception("batch %s: progress not sent", key)
            finally:
                sending.clear()

        def on_progress(event: ProgressEvent) -> None:
            if kill_at is not None and event.step >= kill_at:
                _log.warning("fault injection: SIGKILL at step %d", event.step)
                os.kill(os.getpid(), signal.SIGKILL)
            latest.append(event)
            if not sending:
                sending.append(asyncio.ensure_future(send()))

        return on_progress

    async def _mark_cancelled(self, key: str, tokens: Sequence[CancelToken]) -> None:
        with contextlib.suppress(RedisError, OSError):
            for member in await self.redis.smembers(self._keys.cancelled(key)):
                if 0 <= int(member) < len(tokens):
                    tokens[int(member)].cancel()

    async def _watch(self, job: Job, tokens: Sequence[CancelToken], running: asyncio.Future[Any]) -> None:
        """Between steps: mark members the bot cancelled; stop the batch when it is aborted or its record gone."""
        cancelled_key, abort_key, record = self._keys.cancelled(job.key), job.abort_id, job.id
        while not running.done():
            await asyncio.sleep(WATCH_S)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.smembers(cancelled_key)
                    pipe.exists(abort_key)
                    pipe.exists(record)
                    members, aborted, exists = await pipe.execute()
            except (RedisError, OSError):
                continue  # an outage: the batch goes on; what it makes is stored once Redis is back
            for member in members:
                index = int(member)
                if 0 <= index < len(tokens):
                    tokens[index].cancel()
            if aborted or not exists:
                running.cancel()
                return

    def _observe_speed(self, batch: Sequence[GenerationRequest], outcomes: Sequence[Outcome], seconds: float) -> None:
        if not all(isinstance(outcome, GenerationResult) for outcome in outcomes):
            return
        try:
            _, model = self._config.model(batch[0].model)
        except ImagineError:
            return
        cost = sum(estimate_cost(request, model.cost_weight) for request in batch)
        if cost > 0:
            speed = seconds / cost
            self._speed = speed if self._speed is None else self._speed + SPEED_SMOOTHING * (speed - self._speed)

    async def _encode(self, key: str, member: int, outcome: Outcome, images: list[tuple[str, bytes]]) -> dict[str, Any]:
        """One request's outcome as JSON; its PNGs are added to ``images`` (key, bytes) or written to the shared
        folder (lossless and fast: the bot decodes them and adds the parameters when it saves them)."""
        if isinstance(outcome, ImagineError):
            return {"error": error_to_json(outcome)}
        pngs = await asyncio.to_thread(lambda: [png_of(image) for image in outcome.images])
        places: list[dict[str, Any]] = []
        for index, png in enumerate(pngs):
            shared = self._settings.shared_dir
            if shared is not None and len(png) > self._settings.inline_result_bytes:
                path = Path(shared) / f"imagine-{key}-{member}-{index}.png"
                await asyncio.to_thread(path.write_bytes, png)
                places.append({"file": str(path)})
            else:
                image_key = self._keys.image(key, member, index)
                images.append((image_key, png))
                places.append({"key": image_key})
        stored = StoredResult(request=outcome.request, seeds=list(outcome.seeds), timings=outcome.timings,
                              images=places, nsfw=list(outcome.nsfw), warnings=list(outcome.warnings),
                              model_sampler=outcome.model_sampler)
        return result_to_json(stored)

    async def _store(self, job: Job, output: dict[str, Any], images: Sequence[tuple[str, bytes]] = ()) -> None:
        """Write the images and the output, then say so; through an outage, until written or the batch is gone."""
        ttl_ms = int(self._settings.result_ttl_s * 1000)
        while True:
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    for image_key, png in images:
                        pipe.set(image_key, png, px=ttl_ms)
                    pipe.set(self._keys.output(job.key), dumps(output), px=ttl_ms)
                    pipe.publish(self._keys.events(job.key), dumps(DONE_MESSAGE))
                    await pipe.execute()
                return
            except (RedisError, OSError) as exc:
                _log.warning("batch %s: cannot store its output yet (%s); retrying", job.key, exc)
            await asyncio.sleep(self._settings.heartbeat_s)
            try:
                if not await self.redis.exists(job.id):
                    _log.warning("batch %s: its record is gone (Redis restarted); the bot sends it again", job.key)
                    return
            except (RedisError, OSError):
                pass

    def _clean_shared_dir(self) -> None:
        """Remove result files the bot never took (it died meanwhile) once they are older than the result TTL."""
        shared = self._settings.shared_dir
        if shared is None:
            return
        folder = Path(shared)
        folder.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - self._settings.result_ttl_s
        for path in folder.glob("imagine-*.png"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()


def with_models(settings: WorkerSettings, config: GenerationConfig, models: Sequence[str]) -> WorkerSettings:
    """Settings serving ``models`` (names or sources, checked against the config; empty: every model, preloading
    the default). Raises the config's ConfigError naming the unknown or disabled one."""
    names = tuple(config.model(model)[0] for model in models)
    preload = names[: config.executor.max_loaded_models] if names else (config.default_model,)
    return replace(settings, served=names, preload=preload)
