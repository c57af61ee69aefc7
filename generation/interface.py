"""The executor contract the scheduler depends on; the in-process GPU executor and a future remote
worker pool both implement it. No torch here."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from generation.config import GenerationConfig
from generation.errors import ImagineError
from generation.request import GenerationRequest, GenerationResult, ProgressEvent
from generation.warmup import DownloadCallback, Warmed

ProgressCallback = Callable[[ProgressEvent], None]
Outcome = GenerationResult | ImagineError


class CancelToken:
    """A thread-safe flag: set from the event loop, read by the worker between denoising steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block (a worker thread, never the event loop) until cancelled or ``timeout``; True if cancelled."""
        return self._event.wait(timeout)


class Executor(Protocol):
    """Runs batches of compatible, validated requests.

    ``run`` returns one outcome per request, in order: a GenerationResult, or the ImagineError that
    ended that request alone (GenerationFailed, GenerationCancelled). Cancelling the awaiting task
    interrupts the whole batch at the next step and raises CancelledError. Setting one request's
    CancelToken drops that member only; the others finish. ``on_progress`` is called on the event
    loop thread.
    """

    @property
    def max_batch_images(self) -> int: ...

    async def run(
        self,
        batch: Sequence[GenerationRequest],
        on_progress: ProgressCallback | None = None,
        *,
        cancel_tokens: Sequence[CancelToken] | None = None,
    ) -> list[Outcome]: ...

    async def close(self, *, cancel_running: bool = False) -> None: ...


@runtime_checkable
class ServesModels(Protocol):
    """An executor that can switch to the models of a reloaded config without a restart."""

    def use_models(self, config: GenerationConfig) -> None: ...


@runtime_checkable
class PreparesModels(Protocol):
    """An executor that can load a model ahead of its first request and measure it (the start-up warm-up)."""

    async def prepare(self, model: str | None, on_download: DownloadCallback | None = None) -> Warmed:
        """Load ``model`` (None: the default) and run the warm-up; ``on_download`` is called on the event loop.

        Raises ModelLoadError (or another ImagineError) with a one-line reason when it cannot serve."""
        ...


@runtime_checkable
class Pooled(Protocol):
    """An executor whose capacity is a pool of workers that come and go (remote GPU workers over Redis).

    The scheduler hands out a batch only while fewer batches run than ``slots`` (instead of
    ``scheduler.concurrency``), so the fair order holds across every worker; ``on_change`` callbacks run on the
    event loop whenever ``slots`` or ``unavailable`` may have changed. While ``unavailable`` gives a reason
    (the queue's server cannot be reached), new requests are refused and queued ones wait.
    """

    @property
    def slots(self) -> int: ...

    @property
    def unavailable(self) -> str | None: ...

    def on_change(self, callback: Callable[[], None]) -> None: ...

    async def start(self) -> None:
        """Begin watching the pool (on the event loop, before the first batch)."""
        ...
