"""Fakes and builders for the scheduler tests: a fake executor on simulated time, a recording
listener, and small config/job factories. No sleeps, no GPU."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.core.config import AppConfig, GuildConfig, Limits, SchedulerConfig
from bot.core.config_store import ConfigStore
from bot.scheduler import Job, Scheduler, SimulatedClock
from generation.config import GenerationConfig
from generation.errors import FixableFailure, GenerationCancelled
from generation.interface import CancelToken, Outcome, ProgressCallback
from generation.request import GenerationRequest, GenerationResult, ProgressEvent, Timings

OPEN_LIMITS = Limits(
    user_rate=None, guild_rate=None, max_queued_per_user=None, max_queued_per_guild=None, daily_images_per_user=None
)


def make_config(
    *,
    limits: Limits = OPEN_LIMITS,
    guilds: dict[int, GuildConfig] | None = None,
    generation: GenerationConfig | None = None,
    **scheduler: Any,
) -> AppConfig:
    settings = {"batch_window_ms": 0, "position_update_s": 0.0, "max_queued": None, **scheduler}
    return AppConfig(
        limits=limits,
        guilds=guilds or {},
        scheduler=SchedulerConfig(**settings),
        generation=generation or GenerationConfig(),
    )


def make_request(
    *, size: int = 512, steps: int = 25, count: int = 1, model: str = "tiny", prompt: str = "a cat"
) -> GenerationRequest:
    """A request as ``generation.request.validate`` would return it (every field filled in)."""
    return GenerationRequest(
        prompt=prompt,
        width=size,
        height=size,
        steps=steps,
        guidance=7.0,
        seed=1,
        count=count,
        scheduler="default",
        model=model,
    )


_ids = itertools.count(1)


def make_job(
    guild: int = 1,
    user: int = 10,
    *,
    channel: int = 100,
    roles: Sequence[int] = (),
    job_id: str | None = None,
    cost_weight: float = 1.0,
    **request: Any,
) -> Job:
    return Job.create(
        job_id or f"job-{next(_ids)}",
        make_request(**request),
        user_id=user,
        guild_id=guild,
        channel_id=channel,
        role_ids=frozenset(roles),
        cost_weight=cost_weight,
    )


@dataclass
class FakeExecutor:
    """Runs a batch in ``duration(batch)`` simulated seconds, in ``steps`` progress steps; a member
    whose CancelToken is set is dropped at the next step. ``fail(request)`` fails one member;
    ``crash`` (a callable on the batch) raises for the whole batch."""

    clock: SimulatedClock
    max_batch_images: int = 4
    steps: int = 2
    duration: Callable[[Sequence[GenerationRequest]], float] = lambda batch: 1.0
    fail: Callable[[GenerationRequest], bool] = lambda request: False
    crash: Callable[[Sequence[GenerationRequest]], bool] = lambda batch: False
    calls: list[list[GenerationRequest]] = field(default_factory=list)
    active: int = 0
    peak_active: int = 0

    async def run(
        self,
        batch: Sequence[GenerationRequest],
        on_progress: ProgressCallback | None = None,
        *,
        cancel_tokens: Sequence[CancelToken] | None = None,
    ) -> list[Outcome]:
        self.calls.append(list(batch))
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            tokens = list(cancel_tokens or [CancelToken() for _ in batch])
            dropped = [False] * len(batch)
            total = self.duration(batch)
            for step in range(1, self.steps + 1):
                await self.clock.sleep(total / self.steps)
                dropped = [d or t.cancelled for d, t in zip(dropped, tokens, strict=True)]
                if on_progress is not None:
                    on_progress(ProgressEvent(step, self.steps))
            if self.crash(batch):
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            outcomes: list[Outcome] = []
            for request, gone in zip(batch, dropped, strict=True):
                if gone:
                    outcomes.append(GenerationCancelled("cancelled"))
                elif self.fail(request):
                    outcomes.append(FixableFailure("out of GPU memory; try a smaller size"))
                else:
                    outcomes.append(GenerationResult(request, [], request.seeds(), Timings(denoise_s=total)))
            return outcomes
        finally:
            self.active -= 1

    async def close(self, *, cancel_running: bool = False) -> None:
        return None


@dataclass
class FakePool(FakeExecutor):
    """A ``FakeExecutor`` that is ``Pooled``: ``workers`` live workers (``slots``), and ``unavailable`` while its
    queue's server is out of reach. ``set(workers=..., unavailable=...)`` tells the scheduler, as the remote
    executor's worker pool does."""

    workers: int = 1
    why_unavailable: str | None = None
    listeners: list[Callable[[], None]] = field(default_factory=list)
    started: bool = False

    @property
    def slots(self) -> int:
        return self.workers

    @property
    def unavailable(self) -> str | None:
        return self.why_unavailable

    def on_change(self, callback: Callable[[], None]) -> None:
        self.listeners.append(callback)

    async def start(self) -> None:
        self.started = True

    def set(self, *, workers: int | None = None, unavailable: str | None = None) -> None:
        if workers is not None:
            self.workers = workers
        self.why_unavailable = unavailable
        for callback in self.listeners:
            callback()


@dataclass
class Recorder:
    """A JobListener that records every call as (kind, job id, details)."""

    events: list[tuple[str, str, Any]] = field(default_factory=list)
    jobs: dict[str, Job] = field(default_factory=dict)

    def queued(self, job: Job, position: int | None, eta_s: float | None) -> None:
        self.jobs[job.id] = job
        self.events.append(("queued", job.id, (position, eta_s)))

    def position_changed(self, job: Job, position: int | None, eta_s: float | None) -> None:
        self.events.append(("position", job.id, (position, eta_s)))

    def started(self, job: Job) -> None:
        self.events.append(("started", job.id, None))

    def progress(self, job: Job, event: ProgressEvent) -> None:
        self.events.append(("progress", job.id, event.step))

    def finished(self, job: Job) -> None:
        self.jobs[job.id] = job
        self.events.append(("finished", job.id, job.state))

    def kinds(self, job_id: str) -> list[str]:
        return [kind for kind, jid, _ in self.events if jid == job_id]

    def finished_states(self) -> dict[str, Any]:
        return {jid: state for kind, jid, state in self.events if kind == "finished"}

    def last_position(self, job_id: str) -> Any:
        found = [detail for kind, jid, detail in self.events if jid == job_id and kind in ("queued", "position")]
        return found[-1] if found else None


class Rig:
    """A scheduler on simulated time with a FakeExecutor and a Recorder; ``store`` swaps the config."""

    def __init__(self, *, executor_kwargs: dict[str, Any] | None = None, listener: Any = None, **config: Any) -> None:
        self.clock = SimulatedClock()
        self.executor = FakeExecutor(self.clock, **(executor_kwargs or {}))
        self.recorder = Recorder()
        self.store = ConfigStore(initial=make_config(**config))
        self.scheduler = Scheduler(self.executor, self.store, clock=self.clock,
                                   listener=listener if listener is not None else self.recorder)

    def batches(self) -> list[list[str]]:
        return [[request.prompt for request in call] for call in self.executor.calls]

    def submit(self, name: str, guild: int = 1, user: int = 10, **kwargs: Any) -> Job:
        return self.scheduler.submit(make_job(guild, user, job_id=name, prompt=name, **kwargs))
