"""The in-process executor: a thin asyncio wrapper that runs the synchronous core on one worker thread.

One dedicated thread per device owns the pipelines (a single-worker ThreadPoolExecutor, created
once). The worker talks to the event loop only through ``loop.call_soon_threadsafe`` (progress) and
the future that ``asyncio.wrap_future`` resolves thread-safely. Importing this module does not
import torch; ``GpuExecutor.from_config`` does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from generation.errors import ExecutorClosed, GenerationCancelled
from generation.interface import CancelToken, Outcome, ProgressCallback
from generation.request import GenerationRequest, ProgressEvent
from generation.warmup import DownloadCallback, DownloadProgress, Warmed

if TYPE_CHECKING:
    from generation.config import GenerationConfig
    from generation.runner import FaultHook

_log = logging.getLogger(__name__)


class SyncRunner(Protocol):
    """The synchronous core (``generation.runner.Runner``), or a fake of it in tests."""

    @property
    def max_batch_images(self) -> int: ...

    def run(
        self,
        batch: Sequence[GenerationRequest],
        on_progress: ProgressCallback | None = None,
        *,
        cancel_tokens: Sequence[CancelToken | None] | None = None,
        interrupt: CancelToken | None = None,
    ) -> list[Outcome]: ...

    def close(self) -> None: ...

    def use_models(self, config: GenerationConfig) -> None: ...

    def prepare(self, name: str | None, on_download: DownloadCallback | None = None, *,
                interrupt: CancelToken | None = None) -> Warmed: ...


class GpuExecutor:
    """Implements ``generation.interface.Executor`` on one device."""

    def __init__(self, runner: SyncRunner, *, name: str = "device") -> None:
        self._runner = runner
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"imagine-{name}")
        self._interrupts: set[CancelToken] = set()
        self._closing: concurrent.futures.Future[None] | None = None

    @classmethod
    def from_config(cls, config: GenerationConfig, *, fault_hook: FaultHook | None = None) -> GpuExecutor:
        from generation.runner import Runner

        return cls(Runner(config, fault_hook=fault_hook), name=config.executor.device)

    @property
    def runner(self) -> SyncRunner:
        return self._runner

    @property
    def max_batch_images(self) -> int:
        return self._runner.max_batch_images

    def use_models(self, config: GenerationConfig) -> None:
        """Serve the models of a reloaded config from the next batch on."""
        self._runner.use_models(config)

    async def prepare(self, model: str | None, on_download: DownloadCallback | None = None) -> Warmed:
        """Load and warm up ``model`` on the worker thread (batches submitted meanwhile wait behind it)."""
        if self._closing is not None:
            raise ExecutorClosed("the generator is shutting down and takes no new work; try again after the restart")
        loop = asyncio.get_running_loop()
        stop = CancelToken()  # a shutdown stops a long download at its next chunk, the warm-up at its next step
        future = self._pool.submit(self._runner.prepare, model, _download_forwarder(loop, on_download, stop),
                                   interrupt=stop)
        self._interrupts.add(stop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            stop.cancel()
            raise
        finally:
            self._interrupts.discard(stop)

    @property
    def closed(self) -> bool:
        return self._closing is not None

    async def run(
        self,
        batch: Sequence[GenerationRequest],
        on_progress: ProgressCallback | None = None,
        *,
        cancel_tokens: Sequence[CancelToken] | None = None,
    ) -> list[Outcome]:
        if self._closing is not None:
            raise ExecutorClosed("the generator is shutting down and takes no new work; try again after the restart")
        loop = asyncio.get_running_loop()
        interrupt = CancelToken()
        progress = _forwarder(loop, on_progress) if on_progress is not None else None
        future = self._pool.submit(self._runner.run, list(batch), progress, cancel_tokens=cancel_tokens,
                                   interrupt=interrupt)
        self._interrupts.add(interrupt)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # A queued batch was cancelled with the wrapper; a running one stops at its next step.
            interrupt.cancel()
            if not future.done():
                # Wait for the worker to let go, so the device is free once the cancellation lands.
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.wrap_future(future))
            raise
        finally:
            self._interrupts.discard(interrupt)

    async def close(self, *, cancel_running: bool = False) -> None:
        """Refuse new work, finish (or with ``cancel_running`` interrupt) what was submitted, unload models."""
        if self._closing is None:
            if cancel_running:
                for interrupt in list(self._interrupts):
                    interrupt.cancel()
            # Queued after all submitted work, on the thread that owns the models.
            self._closing = self._pool.submit(self._runner.close)
            self._pool.shutdown(wait=False)
        elif cancel_running:
            for interrupt in list(self._interrupts):
                interrupt.cancel()
        await asyncio.wrap_future(self._closing)


def _forwarder(loop: asyncio.AbstractEventLoop, on_progress: ProgressCallback) -> ProgressCallback:
    def forward(event: ProgressEvent) -> None:
        try:
            loop.call_soon_threadsafe(on_progress, event)
        except RuntimeError:
            # The loop closed under a still-running batch; nobody is listening any more.
            _log.debug("progress dropped: event loop closed")

    return forward


def _download_forwarder(loop: asyncio.AbstractEventLoop, on_download: DownloadCallback | None,
                        stop: CancelToken) -> DownloadCallback:
    def forward(progress: DownloadProgress) -> None:
        if stop.cancelled:
            raise GenerationCancelled("the model load was stopped (the bot is shutting down)")
        if on_download is None:
            return
        try:
            loop.call_soon_threadsafe(on_download, progress)
        except RuntimeError:
            _log.debug("download progress dropped: event loop closed")

    return forward
