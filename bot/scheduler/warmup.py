"""The default model, loaded in the background from start-up on, so the first request does not pay for it.

While the model loads (and downloads: progress comes from the real byte counts) the scheduler holds
dispatch: requests are admitted and wait queued, and their status says how far the load is. A warm-up
generation follows; its measured speed gives the first ETAs. A load that fails leaves the bot up:
requests for that model are refused with the reason, and the load is tried again after 30 s, 1 min,
2 min, ... (at most 15 min apart), and at once after any config reload.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

from bot.core.config_store import ConfigStore
from bot.core.tasks import BackgroundLoop
from bot.core.text import format_duration
from bot.scheduler.clock import Clock
from bot.scheduler.scheduler import Scheduler
from generation.errors import ImagineError
from generation.interface import PreparesModels
from generation.warmup import DownloadProgress, Warmed

_log = logging.getLogger(__name__)
RETRY_FIRST_S = 30.0
RETRY_MAX_S = 900.0
LOG_EVERY_S = 5.0  # download progress in the log, at most this often
SLOW_IMAGE_S = 10.0  # on a CPU, slower than this per image: suggest the fast model
Phase = Literal["loading", "ready", "failed"]


@dataclass(frozen=True)
class ModelState:
    """Where the default model's load stands, for status texts and logs."""

    model: str
    phase: Phase
    progress: DownloadProgress | None = None  # while loading, once the download has reported
    error: str | None = None  # when failed: one line for people
    retry_in_s: float | None = None  # when failed: until the next try
    warmed: Warmed | None = None  # when ready


def byte_pair(done: int, total: int) -> str:
    """``1.9 of 4.3 GB`` (or MB, for downloads under a gigabyte)."""
    unit, size = ("GB", 1e9) if total >= 1e9 else ("MB", 1e6)
    return f"{done / size:.1f} of {total / size:.1f} {unit}"


def progress_line(model: str, progress: DownloadProgress | None) -> str:
    """``Loading model sd15 — 45% (1.9 of 4.3 GB)``; without download bytes: ``Loading model sd15``."""
    if progress is None or progress.total_bytes <= 0 or progress.done_bytes >= progress.total_bytes:
        return f"Loading model {model}"
    pair = byte_pair(progress.done_bytes, progress.total_bytes)
    return f"Loading model {model} — {progress.fraction * 100:.0f}% ({pair})"


class ModelWarmup:
    """Keeps the configured default model loaded and measured (see the module docstring)."""

    def __init__(self, executor: PreparesModels, scheduler: Scheduler, config: ConfigStore, clock: Clock) -> None:
        self._executor = executor
        self._scheduler = scheduler
        self._config = config
        self._clock = clock
        self._state: ModelState | None = None
        self._retry_at: float | None = None
        self._wake = asyncio.Event()
        self._loop = BackgroundLoop("imagine-model-warmup", self._run)
        self._served: tuple[str, object] | None = None  # (name, its config) that is loaded and measured
        self._last_log = float("-inf")
        self._settled = asyncio.Condition()  # notified after each load attempt ends
        config.subscribe(lambda _reloaded: self._wake.set())  # a reload retries a failed load at once

    @property
    def state(self) -> ModelState | None:
        """None before the first load starts; the retry countdown is computed when asked."""
        state = self._state
        if state is not None and state.phase == "failed" and self._retry_at is not None:
            left = max(0.0, self._retry_at - self._clock.monotonic())
            return ModelState(state.model, "failed", error=state.error, retry_in_s=left)
        return state

    def loading_line(self) -> str | None:
        """What a queued job's status adds while the model loads (None when nothing is loading)."""
        state = self._state
        return progress_line(state.model, state.progress) if state is not None and state.phase == "loading" else None

    async def wait_settled(self, model: str | None = None) -> ModelState:
        """The state once a load attempt (of ``model``, when given) has ended: ready or failed."""
        async with self._settled:
            while True:
                state = self.state
                if state is not None and state.phase != "loading" and model in (None, state.model):
                    return state
                await self._settled.wait()

    async def _notify_settled(self) -> None:
        async with self._settled:
            self._settled.notify_all()

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _run(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            generation = self._config.current.generation
            name = generation.default_model
            wanted = (name, generation.models.get(name))
            due = self._retry_at is None or self._clock.monotonic() >= self._retry_at or self._wake.is_set()
            self._wake.clear()
            if wanted != self._served and due:
                why = await self._load(name)
                if why is None:
                    self._served, self._retry_at, delay = wanted, None, RETRY_FIRST_S
                    await self._notify_settled()
                    continue
                self._retry_at = self._clock.monotonic() + delay
                self._scheduler.model_unavailable(name, why, self._retry_at)  # members read plain words
                _log.error("model %s could not be loaded: %s (the bot stays up and tries again in %s)", name, why,
                           format_duration(delay))
                delay = min(delay * 2, RETRY_MAX_S)
                await self._notify_settled()
                continue
            wait_s = None if self._retry_at is None or wanted == self._served else \
                max(0.0, self._retry_at - self._clock.monotonic())
            await self._sleep(wait_s)

    async def _sleep(self, wait_s: float | None) -> None:
        waker = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._clock.sleep(wait_s)) if wait_s is not None else None
        try:
            await asyncio.wait([task for task in (waker, sleeper) if task is not None],
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
            if sleeper is not None:
                sleeper.cancel()

    async def _load(self, name: str) -> str | None:
        """Load and measure ``name``; None when it serves, else why not (one line)."""
        scheduler = self._scheduler
        if self._state is not None and self._state.model != name:  # a reload named another default model
            scheduler.model_unavailable(self._state.model, None)
        self._state = ModelState(name, "loading")
        scheduler.hold_for_model(name)
        scheduler.repush_positions()
        _log.info("loading model %s in the background; requests wait in the queue meanwhile", name)
        # Cancelled (the bot is shutting down): the hold stays, so nothing starts before the drain hands the
        # queued jobs back for the next start.
        try:
            warmed = await self._executor.prepare(name, lambda progress: self._on_download(name, progress))
        except ImagineError as exc:
            scheduler.hold_for_model(None)
            lines = str(exc).strip().splitlines()
            why = lines[0].rstrip(".").removeprefix(f"model {name}: ") if lines else type(exc).__name__
            self._state = ModelState(name, "failed", error=why)
            return why
        scheduler.hold_for_model(None)
        self._state = ModelState(name, "ready", warmed=warmed)
        scheduler.model_unavailable(name, None)
        scheduler.measured_speed(warmed.seconds_per_cost)
        _log.info("model %s ready on %s: loaded in %.1f s; one image at its default size and steps takes about "
                  "%s (measured)", name, warmed.device, warmed.load_s, format_duration(warmed.seconds_per_image))
        if warmed.device == "cpu" and warmed.seconds_per_image >= SLOW_IMAGE_S and name != "fast":
            _log.warning("model %s runs on the CPU: about %s per image (measured). For images in seconds rather "
                         "than minutes, start with IMAGINE_MODEL=fast (SD 1.5 with LCM-LoRA, 4 steps)", name,
                         format_duration(warmed.seconds_per_image))
        return None

    def _on_download(self, name: str, progress: DownloadProgress) -> None:
        state = self._state
        if state is None or state.phase != "loading" or state.model != name:
            return
        self._state = ModelState(name, "loading", progress=progress)
        self._scheduler.repush_positions()  # rate-limited by scheduler.position_update_s
        now = self._clock.monotonic()
        if now - self._last_log >= LOG_EVERY_S or progress.done_bytes >= progress.total_bytes:
            self._last_log = now
            _log.info("downloading model %s — %.0f %% (%s)", name, progress.fraction * 100,
                      byte_pair(progress.done_bytes, progress.total_bytes))
