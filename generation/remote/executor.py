"""``RemoteExecutor``: the bot's executor when ``executor.mode`` is ``redis``. Torch-free: the bot imports it.

It implements the same ``Executor`` protocol as the local ``GpuExecutor``, so the scheduler and the features do
not change; and ``Pooled``: the scheduler hands out a batch only while fewer batches run than there are live
workers (``slots``), which keeps the fair order and the "a light server waits at most one batch" bound across
the whole cluster, and refuses new requests while Redis cannot be reached (``unavailable``). It also
``PreparesModels``: the start-up warm-up waits until a worker has the default model loaded (asking a free
worker to load it when none has), and seeds the ETAs with that worker's measured speed.

Each batch is a ``BatchRun`` (``dispatch.py``); one pub/sub reader delivers every attempt's progress and end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from generation.config import GenerationConfig
from generation.errors import ExecutorClosed, ImagineError, ModelLoadError
from generation.interface import CancelToken, Outcome, ProgressCallback
from generation.remote.dispatch import POLL_S, BatchRun, Channels
from generation.remote.keys import Keys, connect
from generation.remote.pool import NoWorker, WorkerPool
from generation.remote.wire import error_from_json, loads, warmed_from_json
from generation.request import GenerationRequest
from generation.warmup import DownloadCallback, Warmed

_log = logging.getLogger(__name__)


class RemoteExecutor:
    """Runs batches on GPU worker processes over Redis (see the module docstring)."""

    def __init__(self, redis: Redis, config: GenerationConfig) -> None:
        executor = config.executor
        self._redis, self._config = redis, config
        self._keys = Keys(executor.redis_namespace)
        self._pool = WorkerPool(redis, self._keys, heartbeat_s=executor.heartbeat_s)
        self._channels = Channels()
        self._ttl_s = executor.result_ttl_s
        self._numbers = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def from_config(cls, config: GenerationConfig) -> RemoteExecutor:
        assert config.executor.redis_url is not None, "mode redis needs redis_url (the config checks it)"
        return cls(connect(config.executor.redis_url), config)

    @property
    def pool(self) -> WorkerPool:
        return self._pool

    @property
    def max_batch_images(self) -> int:
        return self._config.executor.max_batch_images

    # --- Pooled ----------------------------------------------------------------------------------
    @property
    def slots(self) -> int:
        return 0 if self._closed else self._pool.slots

    @property
    def unavailable(self) -> str | None:
        return self._pool.unavailable

    def on_change(self, callback: Callable[[], None]) -> None:
        self._pool.on_change(callback)

    async def start(self) -> None:
        await self._pool.start()
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_events(), name="imagine-worker-events")

    # --- Executor --------------------------------------------------------------------------------
    async def run(self, batch: Sequence[GenerationRequest], on_progress: ProgressCallback | None = None, *,
                  cancel_tokens: Sequence[CancelToken] | None = None) -> list[Outcome]:
        if self._closed:
            raise ExecutorClosed("the generator is shutting down and takes no new work; try again after the restart")
        if not batch:
            return []
        await self.start()
        tokens = list(cancel_tokens) if cancel_tokens is not None else [CancelToken() for _ in batch]
        run = BatchRun(self._redis, self._keys, self._pool, self._channels, number=str(next(self._numbers)),
                       batch=batch, on_progress=on_progress, tokens=tokens, ttl_s=self._ttl_s)
        return await run.run()

    async def close(self, *, cancel_running: bool = False) -> None:
        """Stop watching the workers and let go of Redis. Running batches are the scheduler's to cancel (its drain
        does): a cancelled one is aborted on its worker."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._pool.stop()
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()

    # --- PreparesModels --------------------------------------------------------------------------
    async def prepare(self, model: str | None, on_download: DownloadCallback | None = None) -> Warmed:
        """Wait until a worker has ``model`` (None: the default) loaded and measured, asking a free one to load it
        when none has. Raises ModelLoadError when live workers exist and none serves it, or the load failed."""
        name = self._config.model(model)[0]
        await self.start()
        while True:
            ready = [info for info in self._pool.workers() if name in info.loaded and name in info.measured]
            if ready:
                return ready[0].measured[name]
            if self._pool.lacks(name):
                raise ModelLoadError(f"model {name}: no GPU worker serves it (start one with --models {name})")
            if self._pool.choose(name) is None:
                await self._pool.changed()  # none alive yet, or all busy: a worker's next beat may change that
                continue
            warmed = await self._ask_to_load(name)
            if warmed is not None:
                return warmed

    async def _ask_to_load(self, name: str) -> Warmed | None:
        """Have a free worker load ``name``; None when that worker (or Redis) went away meanwhile."""
        key = f"{self._pool.session}-load-{next(self._numbers)}"
        try:
            worker = await self._pool.acquire(name, key)
        except NoWorker as exc:
            raise ModelLoadError(f"model {name}: no GPU worker serves it") from exc
        queue = self._pool.queue(worker.id)
        life = self._pool.life(worker.id)
        try:
            await queue.enqueue("prepare_model", key=key, timeout=0, retries=1, ttl=int(self._ttl_s), model=name)
            while self._pool.alive(worker.id, life):
                await asyncio.sleep(POLL_S)
                record = await queue.job(key)
                if record is None:
                    return None  # Redis restarted: look again
                if record.result is not None:
                    return self._warmed(record.result, name)
        except (RedisError, OSError):
            await self._pool.changed()
        finally:
            self._pool.release(worker.id, ended=True)
        return None

    @staticmethod
    def _warmed(result: Any, name: str) -> Warmed:
        if "warmed" in result:
            return warmed_from_json(result["warmed"])
        error = error_from_json(result.get("error") or {})
        if isinstance(error, ImagineError) and not isinstance(error, ModelLoadError):
            raise ModelLoadError(f"model {name}: {error}")
        raise error

    # --- the one pub/sub reader ------------------------------------------------------------------
    async def _read_events(self) -> None:
        """Deliver every batch attempt's messages; through an outage, subscribe again once Redis answers."""
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.psubscribe(self._keys.events_pattern)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "pmessage":
                        channel = message["channel"]
                        self._channels.deliver(channel.decode() if isinstance(channel, bytes) else channel,
                                               loads(message["data"]))
            except (RedisError, OSError):
                await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # a malformed message must not end progress for every later batch
                _log.exception("worker event reader failed; restarting it")
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

