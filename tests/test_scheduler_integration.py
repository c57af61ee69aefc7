"""The scheduler in front of the real executor with the builtin:tiny model (CPU, real time)."""

from __future__ import annotations

import asyncio

import generation.executor as executor_module  # a broken torch install fails here, loudly
from bot.core.config import AppConfig, Limits, SchedulerConfig
from bot.scheduler import Job, JobState, NullListener, Scheduler
from generation.config import ExecutorConfig, GenerationConfig
from generation.request import GenerationRequest, GenerationResult, ProgressEvent, validate


class Listener(NullListener):
    def __init__(self, expected: int) -> None:
        self.scheduler: Scheduler | None = None
        self.done = asyncio.get_running_loop().create_future()
        self.ended: list[Job] = []
        self.expected = expected
        self.kinds: dict[str, list[str]] = {}
        self.images: dict[str, int] = {}

    def _note(self, job: Job, kind: str) -> None:
        self.kinds.setdefault(job.id, []).append(kind)

    def started(self, job: Job) -> None:
        self._note(job, "started")

    def progress(self, job: Job, event: ProgressEvent) -> None:
        self._note(job, "progress")
        if job.id == "cancel-me" and self.scheduler is not None:
            self.scheduler.cancel(job.id)  # interrupt this member only, mid-run

    def finished(self, job: Job) -> None:
        self._note(job, "finished")
        self.ended.append(job)
        if isinstance(job.result, GenerationResult):  # the images are there while subscribers hear of the end
            self.images[job.id] = len(job.result.images)
        if len(self.ended) == self.expected and not self.done.done():
            self.done.set_result(None)


async def test_real_executor_batches_runs_and_cancels_with_tiny_model() -> None:
    generation = GenerationConfig(executor=ExecutorConfig(device="cpu", max_batch_images=4, preview_every_steps=0))
    config = AppConfig(generation=generation, limits=Limits(user_rate=None, guild_rate=None),
                       scheduler=SchedulerConfig(batch_window_ms=30, initial_seconds_per_cost=5.0))
    name, model = generation.model(None)

    def job(job_id: str, guild: int, user: int, steps: int) -> Job:
        request = validate(GenerationRequest(prompt=f"a fox {job_id}", steps=steps, seed=3), name, model)
        return Job.create(job_id, request, user_id=user, guild_id=guild, channel_id=1, cost_weight=model.cost_weight)

    executor = executor_module.GpuExecutor.from_config(generation)
    listener = Listener(expected=3)
    scheduler = Scheduler(executor, config, listener=listener)
    listener.scheduler = scheduler
    await scheduler.start()
    try:
        scheduler.submit(job("a", 1, 1, 4))
        scheduler.submit(job("b", 2, 2, 4))  # compatible with a: same batch
        scheduler.submit(job("cancel-me", 1, 3, 12))
        await asyncio.wait_for(listener.done, timeout=90)
    finally:
        await scheduler.stop(cancel_running=True)
        await executor.close(cancel_running=True)
    states = {job.id: job.state for job in listener.ended}
    assert states == {"a": JobState.DONE, "b": JobState.DONE, "cancel-me": JobState.CANCELLED}
    for job_id in ("a", "b"):
        assert listener.images[job_id] == 1
        assert listener.kinds[job_id][0] == "started" and "progress" in listener.kinds[job_id]
    a = next(job for job in listener.ended if job.id == "a")
    b = next(job for job in listener.ended if job.id == "b")
    assert a.started_at == b.started_at  # one executor call
    assert scheduler.seconds_per_cost != 5.0  # measured on this hardware
