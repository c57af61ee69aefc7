"""The services every feature gets: built once by the composition root (``bot.__main__``), handed to
``ImagineBot``, and read by each feature's ``setup`` through ``services_of(bot)``.

Features never reach through one service to another's parts (``scheduler.storage`` and the like):
what a feature needs is a field here, or something it builds itself from these fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.core.config_store import ConfigStore
from bot.core.content import ContentStats
from bot.core.faults import Checkpoints
from bot.observability import BotMetrics
from bot.scheduler import Clock, JobEvents, Scheduler, SystemClock
from bot.scheduler.limits import BucketStore
from bot.scheduler.warmup import ModelWarmup
from bot.storage import Storage
from generation.interface import Executor, PreparesModels, ServesModels


@dataclass(frozen=True)
class Services:
    config: ConfigStore
    storage: Storage
    executor: Executor
    scheduler: Scheduler
    clock: Clock
    checkpoints: Checkpoints = field(default_factory=Checkpoints)  # fault injection; inert by default
    warmup: ModelWarmup | None = None  # loads the default model at start-up (executors that can prepare one)
    metrics: BotMetrics | None = None  # with observability.http_port set: what /metrics serves
    # Requests refused by each content rule, per server (the imagine feature counts; metrics read ``counts()``).
    content_stats: ContentStats = field(default_factory=ContentStats)

    @property
    def events(self) -> JobEvents:
        """Every job transition; a feature subscribes its listener in ``setup`` and unsubscribes on unload."""
        return self.scheduler.events


def build_services(config: ConfigStore, storage: Storage, executor: Executor, *,
                   clock: Clock | None = None, checkpoints: Checkpoints | None = None,
                   buckets: BucketStore | None = None) -> Services:
    """The one way the services are put together (the bot's start-up, the tests and the benchmarks). ``buckets``:
    where token buckets outlive a restart (``bot.bucket_mirror`` with Redis configured); None keeps them in memory."""
    clock = clock if clock is not None else SystemClock()
    if isinstance(executor, ServesModels):  # models added or changed by a reload are served at once
        config.subscribe(lambda reloaded: executor.use_models(reloaded.generation))
    scheduler = Scheduler(executor, config, clock=clock, buckets=buckets)
    warmup = ModelWarmup(executor, scheduler, config, clock) if isinstance(executor, PreparesModels) else None
    metrics = None
    observability = config.current.observability
    if observability.http_port is not None:  # read at start-up: a reload does not start or stop the endpoint
        metrics = BotMetrics(scheduler, storage, top_guilds=observability.metrics_top_guilds)
        scheduler.events.subscribe(metrics.listener, name="metrics")  # before any job is admitted or resumed
    return Services(config=config, storage=storage, executor=executor, scheduler=scheduler, clock=clock,
                    checkpoints=checkpoints or Checkpoints(), warmup=warmup, metrics=metrics)


def services_of(bot: Any) -> Services:
    """The services of the bot a feature extension is loaded into (``ImagineBot.services``)."""
    services = getattr(bot, "services", None)
    if not isinstance(services, Services):
        raise TypeError(f"{type(bot).__name__} has no Services; load feature extensions into ImagineBot")
    return services
