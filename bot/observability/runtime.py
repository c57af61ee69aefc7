"""Figures about the process itself: how late the event loop runs, and GPU memory where torch runs CUDA.

The bot never imports torch for this (an import contract keeps torch out of ``bot``): GPU memory is read only
when the executor has already imported torch and initialised CUDA in this process.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from typing import Any

from prometheus_client import Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from bot.core.tasks import BackgroundLoop

_log = logging.getLogger(__name__)
LAG_INTERVAL_S = 1.0


class LoopLag:
    """Samples the event loop's lag: a timer due in ``interval_s`` that fires late measures how long something
    held the loop (a blocking call in a coroutine delays every interaction the bot answers). Runs on the
    loop's own time, not the bot's clock: it measures the real loop."""

    def __init__(self, histogram: Histogram, interval_s: float = LAG_INTERVAL_S) -> None:
        self._histogram = histogram
        self._interval_s = interval_s
        self._loop = BackgroundLoop("imagine-loop-lag", self._run)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wait_s = 0.0  # the first sample at once, so a scrape right after start has one
        while True:
            due = loop.time() + wait_s
            await asyncio.sleep(wait_s)
            self._histogram.observe(max(0.0, loop.time() - due))
            wait_s = self._interval_s


def gpu_memory() -> Iterator[Metric]:
    """Allocated, reserved and total memory per CUDA device, when this process already runs CUDA through torch
    (nothing otherwise: no GPU, a CPU build, a remote executor, or a model not loaded yet)."""
    torch: Any = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if not torch.cuda.is_initialized():
            return
        devices = range(torch.cuda.device_count())
        readings = [(str(index), torch.cuda.memory_allocated(index), torch.cuda.memory_reserved(index),
                     torch.cuda.get_device_properties(index).total_memory) for index in devices]
    except Exception as exc:  # a scrape must never fail on a driver hiccup
        _log.warning("metrics: could not read GPU memory: %s", exc)
        return
    families = [GaugeMetricFamily(f"imagine_gpu_memory_{kind}_bytes", f"GPU memory {what}", labels=["device"])
                for kind, what in (("allocated", "held by tensors"), ("reserved", "held by torch's caching allocator"),
                                   ("total", "on the device"))]
    for device, *values in readings:
        for family, value in zip(families, values, strict=True):
            family.add_metric([device], float(value))
    yield from families
