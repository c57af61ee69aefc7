"""The bot's Prometheus metrics, in a registry of its own (never prometheus_client's global one, so that tests and
several bots in one process each count their own).

Where each figure comes from:
- job events (``JobMetrics`` is a ``bot.scheduler.JobListener``): wait, run and end-to-end histograms, batch
  sizes, jobs by outcome, images by server;
- the scheduler, read at scrape time: queue depth (total and by server), running jobs, refusals by reason;
- storage, counted before each scrape (``BotMetrics.refresh``): the outbox's owed deliveries;
- the event loop (``runtime.LoopLag``) and, where torch already runs CUDA, GPU memory (``runtime.gpu_memory``).

Per-server labels are capped (``GuildLabels``): the ``observability.metrics_top_guilds`` busiest servers by
name, the rest as ``other``, direct messages as ``dm``, so a bot in thousands of servers keeps a bounded
number of series.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as CounterMetric
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.observability.runtime import LoopLag, gpu_memory
from bot.scheduler import Job, JobState, NullListener, Scheduler
from bot.storage import Storage

_log = logging.getLogger(__name__)

WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 900)
RUN_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
END_TO_END_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
DM_LABEL, OTHER_LABEL = "dm", "other"
_OUTCOMES = {JobState.DONE: "done", JobState.FAILED: "failed", JobState.CANCELLED: "cancelled",
             JobState.EXPIRED: "expired"}


def refusal_label(limit: str) -> str:
    """A refusal's reason as a label: the limit's key, with every model's name folded into ``models``
    (model names are config, not a bounded set)."""
    return "models" if limit.startswith("models.") else limit


class GuildLabels:
    """Which servers a metric names: the ``top`` servers with the most admitted jobs since start; the rest are
    ``other``. Counted in memory per server the bot served (bounded by the servers it is in)."""

    def __init__(self, top: int) -> None:
        self._top = top
        self.volume: Counter[int] = Counter()

    def count(self, guild_id: int) -> None:
        if guild_id > 0:
            self.volume[guild_id] += 1

    def named(self) -> set[int]:
        # Ties go to the lower id, so the named set does not flap between scrapes.
        ranked = sorted(self.volume.items(), key=lambda item: (-item[1], item[0]))
        return {guild_id for guild_id, _ in ranked[:self._top]}

    def fold(self, values: Iterable[tuple[int, float]]) -> dict[str, float]:
        """Values keyed by guild id (0 or negative: a direct message lane) summed per label."""
        named = self.named()
        folded: dict[str, float] = {}
        for guild_id, value in values:
            label = DM_LABEL if guild_id <= 0 else str(guild_id) if guild_id in named else OTHER_LABEL
            folded[label] = folded.get(label, 0.0) + value
        return folded


class JobMetrics(NullListener):
    """The job-event side: a ``bot.scheduler.JobListener`` with plain (synchronous) methods, so each event is
    counted the moment the scheduler sends it, in the order it sends them."""

    def __init__(self, registry: CollectorRegistry, guilds: GuildLabels) -> None:
        self._guilds = guilds
        self.images_by_guild: Counter[int] = Counter()
        self.wait = Histogram("imagine_wait_seconds", "Time a job waited in the queue before it started",
                              buckets=WAIT_BUCKETS, registry=registry)
        self.run = Histogram("imagine_run_seconds", "Time from a job's start to its end (its batch's run)",
                             buckets=RUN_BUCKETS, registry=registry)
        self.end_to_end = Histogram("imagine_end_to_end_seconds",
                                    "Time from admission to images made, for jobs that made them",
                                    buckets=END_TO_END_BUCKETS, registry=registry)
        self.batch_jobs = Histogram("imagine_batch_jobs", "Jobs per executor batch", buckets=BATCH_BUCKETS,
                                    registry=registry)
        self.batch_images = Histogram("imagine_batch_images", "Images per executor batch", buckets=BATCH_BUCKETS,
                                      registry=registry)
        self.jobs = CounterMetric("imagine_jobs", "Admitted jobs that ended, by outcome", ["outcome"],
                                  registry=registry)
        for outcome in _OUTCOMES.values():
            self.jobs.labels(outcome)  # every outcome is exported from the start, at 0
        self._open_batch: list[int] | None = None  # [jobs still to start, images so far] of the batch starting

    def queued(self, job: Job, position: int | None, eta_s: float | None) -> None:
        self._guilds.count(job.guild_id)

    def started(self, job: Job) -> None:
        if job.started_at is not None and job.enqueued_at is not None:
            self.wait.observe(max(0.0, job.started_at - job.enqueued_at))
        # A batch's "started" events are sent in a row as it starts: add them up, observe once the last is in.
        if self._open_batch is None:
            self._open_batch = [job.batch_size or 1, 0]
        self._open_batch[0] -= 1
        self._open_batch[1] += job.images
        if self._open_batch[0] <= 0:
            self.batch_jobs.observe(job.batch_size or 1)
            self.batch_images.observe(self._open_batch[1])
            self._open_batch = None

    def finished(self, job: Job) -> None:
        outcome = _OUTCOMES.get(job.state)
        if outcome is None:  # refused: counted by reason from the scheduler (dry runs are refusals too)
            return
        self.jobs.labels(outcome).inc()
        _log.debug("ended: %s", outcome)  # handled inside the job's event: JSON lines carry its id
        if job.started_at is not None and job.finished_at is not None:
            self.run.observe(max(0.0, job.finished_at - job.started_at))
        if job.state is JobState.DONE:
            images = len(job.result.seeds) if job.result is not None else job.images
            self.images_by_guild[job.guild_id] += images  # 0: direct messages
            if job.enqueued_at is not None and job.finished_at is not None:
                self.end_to_end.observe(max(0.0, job.finished_at - job.enqueued_at))


class _ScrapeTimeFigures(Collector):
    """Figures read when Prometheus scrapes: the scheduler's queue and refusals, images by server (labels
    decided now, from the current top servers), GPU memory."""

    def __init__(self, scheduler: Scheduler, jobs: JobMetrics, guilds: GuildLabels) -> None:
        self._scheduler = scheduler
        self._jobs = jobs
        self._guilds = guilds

    def collect(self) -> Iterator[Metric]:
        snapshot = self._scheduler.snapshot()
        yield GaugeMetricFamily("imagine_queue_depth", "Jobs waiting in the queue", value=snapshot.total_queued)
        by_guild = GaugeMetricFamily("imagine_guild_queue_depth", "Jobs waiting in the queue, by server",
                                     labels=["guild"])
        for label, value in sorted(self._guilds.fold(snapshot.guild_lengths.items()).items()):
            by_guild.add_metric([label], value)
        yield by_guild
        yield GaugeMetricFamily("imagine_jobs_running", "Jobs in batches on the executor", value=len(snapshot.running))
        images = CounterMetricFamily("imagine_images", "Images made, by server", labels=["guild"])
        for label, value in sorted(self._guilds.fold(self._jobs.images_by_guild.items()).items()):
            images.add_metric([label], value)
        yield images
        refusals = CounterMetricFamily("imagine_refusals", "Requests refused, by the limit that refused them",
                                       labels=["reason"])
        folded: Counter[str] = Counter()
        for limit, count in self._scheduler.refusals().items():
            folded[refusal_label(limit)] += count
        for reason, count in sorted(folded.items()):
            refusals.add_metric([reason], count)
        yield refusals
        yield from gpu_memory()


class BotMetrics:
    """Every metric of one bot. Subscribe ``listener`` to the job events, ``start()`` the loop-lag sampler on
    the running loop, and before each scrape ``await refresh()`` then ``render()``."""

    def __init__(self, scheduler: Scheduler, storage: Storage, *, top_guilds: int) -> None:
        self.registry = CollectorRegistry()
        self._storage = storage
        guilds = GuildLabels(top_guilds)
        self.listener = JobMetrics(self.registry, guilds)
        self.registry.register(_ScrapeTimeFigures(scheduler, self.listener, guilds))
        self._owed = Gauge("imagine_outbox_owed", "Ended jobs whose last message Discord has not accepted yet",
                           registry=self.registry)
        self.loop_lag = LoopLag(Histogram(
            "imagine_event_loop_lag_seconds", "How late the event loop ran a timer (a blocked loop shows here)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=self.registry))

    def start(self) -> None:
        self.loop_lag.start()

    async def stop(self) -> None:
        await self.loop_lag.stop()

    async def refresh(self) -> None:
        """Counts that live in the database, read just before a scrape; a database that does not answer
        leaves the last value (``/readyz`` says what is wrong)."""
        try:
            self._owed.set(await self._storage.owed_count())
        except Exception as exc:  # a scrape must still answer with everything else
            _log.warning("metrics: could not count owed deliveries: %s", exc)

    def render(self) -> bytes:
        return generate_latest(self.registry)
