"""GPU workers whose "GPU" answers at once: the real ``GpuWorker`` (its queue, heartbeat, result storage) over a
runner that makes an 8x8 image without torch. What remains is the hand-over cost: the bot's dispatch limit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace

from PIL import Image

from generation.config import GenerationConfig
from generation.executor import GpuExecutor
from generation.interface import CancelToken, Outcome, ProgressCallback
from generation.remote.keys import connect
from generation.remote.worker import GpuWorker, WorkerSettings
from generation.request import GenerationRequest, GenerationResult, Timings
from generation.warmup import DownloadCallback, Warmed


class InstantRunner:
    """The ``SyncRunner`` protocol, answering at once."""

    max_batch_images = 64

    def run(self, batch: Sequence[GenerationRequest], on_progress: ProgressCallback | None = None, *,
            cancel_tokens: Sequence[CancelToken | None] | None = None,
            interrupt: CancelToken | None = None) -> list[Outcome]:
        image = Image.new("RGB", (8, 8))
        return [GenerationResult(request, [image] * request.count, request.seeds(), Timings()) for request in batch]

    def close(self) -> None:
        return None

    def use_models(self, config: GenerationConfig) -> None:
        return None

    def prepare(self, name: str | None, on_download: DownloadCallback | None = None, *,
                interrupt: CancelToken | None = None) -> Warmed:
        return Warmed(model=name or "tiny", device="fake", load_s=0.0, seconds_per_step=0.001,
                      seconds_per_image=0.001, seconds_per_cost=0.001)


@dataclass
class FakeWorkers:
    workers: list[GpuWorker]
    tasks: list[asyncio.Task[None]]

    async def stop(self) -> None:
        for worker in self.workers:
            worker.drain()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def start_fake_workers(config: GenerationConfig, count: int) -> FakeWorkers:
    executor = config.executor
    assert executor.redis_url is not None
    workers, tasks = [], []
    for _ in range(count):
        settings = replace(WorkerSettings.from_config(config), preload=(config.default_model,))
        worker = GpuWorker(GpuExecutor(InstantRunner(), name="fake"), config, settings, device="fake",
                           loaded_models=lambda: [config.default_model])
        workers.append(worker)
        tasks.append(asyncio.create_task(worker.serve(connect(executor.redis_url), signals=False)))
    return FakeWorkers(workers, tasks)
