"""``Scheduler``: the small interface the bot talks to. Admission happens in ``submit`` (``check`` is its
dry run); ordering, batching and execution happen in the background dispatcher started by ``start``."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from bot.core.config import AppConfig
from bot.core.config_store import ConfigStore
from bot.core.errors import (
    Banned,
    ChannelNotAllowed,
    GuildPaused,
    JobNotFound,
    ModelUnavailable,
    Refused,
    ShuttingDown,
    WorkersUnreachable,
)
from bot.core.identity import Requester
from bot.core.tasks import wait_event
from bot.core.text import format_duration, one_of
from bot.scheduler.clock import Clock, SystemClock
from bot.scheduler.core import ConfigSource, SchedulerCore
from bot.scheduler.dispatcher import Dispatcher
from bot.scheduler.jobs import Job, JobEvents, JobListener, JobState, lane_of
from bot.scheduler.limits import BucketLevel, BucketStore, Charge, quota_day_starts, quota_period, quota_period_start
from generation.errors import GenerationCancelled
from generation.interface import CancelToken, Executor, Pooled

_log = logging.getLogger(__name__)
WORKERS_RETRY_S = 60.0
WORKERS_UNREACHABLE_TEXT = ("The bot can't reach its GPUs right now, so it isn't taking new requests; requests already "
                            "queued keep their place and run once it can. Please try again in a minute.")


@dataclass(frozen=True)
class QueueEntry:
    job: Job
    position: int | None  # None while the job's guild is paused
    eta_s: float | None  # seconds until it starts


@dataclass(frozen=True)
class QueueSnapshot:
    """What /queue shows: running jobs, queued jobs in fair order, and queue lengths per guild."""

    running: list[Job]
    queued: list[QueueEntry]
    guild_lengths: dict[int, int]
    total_queued: int
    paused_guilds: frozenset[int] = field(default_factory=frozenset)


@dataclass(frozen=True)
class DailyImages:
    """A member's daily image quota today: what /help shows them."""

    left: int
    limit: int
    resets_in_s: float


@dataclass(frozen=True)
class QuotaLeft:
    """A member's daily image quota in one server (or their direct messages) as admission counts it now."""

    limit: int | None  # images a day; None: no quota
    used: int  # images counted against today's quota
    resets_at: float  # epoch second the next quota day begins

    @property
    def left(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used)


class Scheduler:
    """Admits, orders, batches and runs jobs on one executor. All methods run on the event loop.

    ``idle_first``: a server with nothing queued or owed has its next job served ahead of busy servers'
    (``bot.scheduler.fairqueue``); False turns that off (plain fair queueing: the benchmark's baseline).

    ``buckets``: where token buckets outlive the process (the Redis mirror, with Redis configured). The buckets in
    memory stay the authority: every take is handed to it, ``start`` loads what it kept, ``stop`` closes it."""

    def __init__(self, executor: Executor, config: ConfigSource | AppConfig, *, clock: Clock | None = None,
                 listener: JobListener | None = None, record_timings: bool = False,
                 idle_first: bool = True, buckets: BucketStore | None = None) -> None:
        source: ConfigSource = ConfigStore(initial=config) if isinstance(config, AppConfig) else config
        self._core = SchedulerCore(source, clock if clock is not None else SystemClock(), listener,
                                   idle_first=idle_first, on_take=buckets.taken if buckets is not None else None)
        self._buckets = buckets
        self._buckets_loaded = False
        self._dispatcher = Dispatcher(self._core, executor, record_timings=record_timings)
        self._draining = False
        self._refusals: Counter[str] = Counter()
        # Remote GPU workers: as many batches in flight as live workers; a worker joining or leaving (or the
        # queue's server coming back) wakes the dispatcher, as a finished batch does.
        self._pool = executor if isinstance(executor, Pooled) else None
        if self._pool is not None:
            pool = self._pool
            self._core.slots = lambda: pool.slots
            pool.on_change(self._core.changed)

    @property
    def events(self) -> JobEvents:
        """Every job transition, for any number of subscribers (``events.subscribe(listener)``)."""
        return self._core.events

    @property
    def draining(self) -> bool:
        """True once ``drain`` has begun: jobs interrupted from now on resume on the next start."""
        return self._draining

    # --- lifecycle ----------------------------------------------------------------------------
    def check_accepting(self) -> None:
        """Raise ShuttingDown once ``drain`` has begun (the bot checks before it stores a new job)."""
        if self._draining:
            raise ShuttingDown("The bot is restarting and takes no new requests; try again in a minute.",
                               limit="shutdown", retry_after=60.0)

    async def start(self) -> None:
        if self._buckets is not None and not self._buckets_loaded:
            # Before anything is admitted (the bot starts the scheduler before it serves commands): a restart or a
            # standby's takeover resumes every bucket where it was, so a flood gets no fresh burst.
            self._buckets_loaded = True
            self._restore_buckets(await self._buckets.load())
        if self._pool is not None:
            await self._pool.start()
        self._draining = False
        self._dispatcher.hold_queue = False
        self._dispatcher.start()

    async def stop(self, *, cancel_running: bool = False) -> None:
        """Stop dispatching. Running batches finish (or are interrupted with ``cancel_running``). The bucket store
        writes what it still holds (before a standby takes over)."""
        await self._dispatcher.stop()
        if cancel_running:
            self._dispatcher.cancel_running()
        await self._dispatcher.wait_batches(None)
        await self._core.events.flush()
        if self._buckets is not None:
            await self._buckets.close()

    def _restore_buckets(self, levels: list[tuple[str, object, BucketLevel]]) -> None:
        core = self._core
        now, wall = core.clock.monotonic(), core.clock.time()
        restored = sum(core.admission.restore_bucket(kind, key, level, now, wall) for kind, key, level in levels)
        if levels:
            _log.info("rate limits: %d token bucket(s) resumed where they were (%d full by now)", restored,
                      len(levels) - restored)

    async def drain(self, *, finish_queued: bool = False, timeout_s: float | None = None) -> list[Job]:
        """Shut down: refuse new jobs, then run the queue dry (``finish_queued``) or hand queued jobs
        back, in fair order, state HANDED_BACK, for the bot to persist and ``submit(readmit=True)``
        later. Running batches get ``timeout_s`` (clock seconds) to finish, then are interrupted."""
        self._draining = True
        clock = self._core.clock
        deadline = None if timeout_s is None else clock.monotonic() + timeout_s
        if finish_queued:
            while len(self._core.queue) and self._dispatcher.running and self._dispatcher.has_work():
                left = None if deadline is None else deadline - clock.monotonic()
                if left is not None and left <= 0:
                    break
                self._core.updated.clear()  # any change: a batch ended, a job expired or was cancelled
                await wait_event(self._core.updated, clock.sleep, left)
        self._dispatcher.hold_queue = True
        handed = [job for _, job, _ in self._core.ordered()]
        handed += [job for job in self._core.jobs.values() if job.state is JobState.QUEUED and job not in handed]
        for job in handed:
            self._core.finish(job, JobState.HANDED_BACK)
        left = None if deadline is None else max(0.0, deadline - clock.monotonic())
        if not await self._dispatcher.wait_batches(left):
            for job in list(self._core.jobs.values()):
                job.cancel_token.cancel()
            self._dispatcher.cancel_running()
        await self.stop()
        return handed

    # --- admission ----------------------------------------------------------------------------
    def submit(self, job: Job, *, readmit: bool = False) -> Job:
        """Admit ``job`` (QUEUED) or raise a Refused subclass (the job ends REFUSED, nothing consumed).

        ``readmit=True`` is for jobs admitted before a restart: it skips rate limits, quotas, caps,
        channel and pause checks, but the job still takes its fair place in the queue."""
        core = self._core
        if job.id in core.jobs:
            raise ValueError(f"job id {job.id!r} is already queued or running")
        allowed = (JobState.NEW, JobState.HANDED_BACK, JobState.QUEUED) if readmit else (JobState.NEW,)
        if job.state not in allowed:
            raise ValueError(f"job {job.id!r} is {job.state.value}; only new jobs can be submitted")
        if readmit:
            job.cancel_token = CancelToken()
        try:
            self.check_accepting()
            charge = self._readmit_charge(job) if readmit else self._admit(job)
        except Refused as exc:
            self._refusals[exc.limit] += 1
            job.state, job.error, job.finished_at = JobState.REFUSED, exc, core.clock.monotonic()
            core.events.send(job, "finished")
            raise
        core.enqueue(job, charge)
        return job

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Around the way in of a request that has reached the bot (while it is stored, before ``submit``):
        while any is on its way, a job that finds the GPU idle waits for it, at most ``batch_window_ms`` from its
        own arrival, so that requests sent together start together (8 at once ran as 1 + 4 + 3, not 4 + 4).
        A lone request has nothing to wait for and starts at once."""
        core = self._core
        core.arriving += 1
        try:
            yield
        finally:
            core.arriving -= 1
            core.wake.set()

    def check(self, job: Job) -> None:
        """Raise the Refused that ``submit(job)`` would raise now, without consuming anything or reporting
        the job to anyone: a dry run, so that a request bound to be refused costs no download or storage.
        A refusal here is still counted in ``refusals``: the request it checked ends refused."""
        try:
            self.check_accepting()
            self._admit(job, dry_run=True)
        except Refused as exc:
            self._refusals[exc.limit] += 1
            raise

    def refusals(self) -> dict[str, int]:
        """Requests refused since start, by the key of the limit that refused them (``submit`` and ``check``
        alike: a request refused by the dry run never reaches ``submit``)."""
        return dict(self._refusals)

    def _readmit_charge(self, job: Job) -> Charge | None:
        core = self._core
        return core.admission.record_usage(job.user_key, job.images, core.limits(job.guild_id, job.role_ids),
                                           core.clock.time())

    def record_usage(self, guild_id: int, user_id: int, role_ids: frozenset[int], images: int,
                     finished_wall: float) -> None:
        """Count images made before a restart (the quota lives in memory) against today's quota."""
        core = self._core
        key = (lane_of(guild_id, user_id), user_id)
        core.admission.record_usage(key, images, core.limits(guild_id, role_ids), finished_wall)

    def quota_day_start(self, guild_id: int | None) -> float:
        """The epoch second today's quota day began in this guild (its reset hour and time zone);
        ``None``: in a guild without overrides."""
        core = self._core  # roles never change the reset hour or zone
        limits = core.config.limits if guild_id is None else core.limits(guild_id, frozenset())
        return quota_period_start(core.clock.time(), limits.quota_reset_hour, limits.quota_timezone)

    def quota_days(self, guild_id: int | None, days: int) -> list[datetime]:
        """When the last ``days`` quota days of this guild began (aware, in the quota's time zone), oldest first;
        the last one is today's ``quota_day_start``. Usage figures count per quota day, as the quota does."""
        core = self._core
        limits = core.config.limits if guild_id is None else core.limits(guild_id, frozenset())
        return quota_day_starts(core.clock.time(), limits.quota_reset_hour, limits.quota_timezone, days)

    def quota_left(self, guild_id: int, user_id: int, role_ids: frozenset[int]) -> QuotaLeft:
        """What ``user_id`` (with ``role_ids``) has left of today's image quota in ``guild_id`` (0: their DMs)."""
        core = self._core
        limits = core.limits(guild_id, role_ids)
        period, resets_at = quota_period(core.clock.time(), limits.quota_reset_hour, limits.quota_timezone)
        used = core.admission.quota.used((lane_of(guild_id, user_id), user_id), period)
        return QuotaLeft(limits.daily_images_per_user, used, resets_at)

    def restore_usage(self, guild_id: int, user_id: int, images: int) -> None:
        """Count ``images`` made earlier today (before a restart) against the user's quota for today.
        Counted whatever the user's roles: a member whose quota is unlimited is never checked against it."""
        core = self._core
        limits = core.limits(guild_id, frozenset())
        period, _ = quota_period(core.clock.time(), limits.quota_reset_hour, limits.quota_timezone)
        core.admission.quota.consume((lane_of(guild_id, user_id), user_id), period, images)  # a DM user's own lane

    def daily_images(self, guild_id: int, user_id: int, role_ids: frozenset[int]) -> DailyImages | None:
        """How many images the member may still make today, under their limits here; None without a daily limit."""
        quota = self.quota_left(guild_id, user_id, role_ids)
        if quota.limit is None:
            return None
        return DailyImages(quota.left or 0, quota.limit, max(0.0, quota.resets_at - self._core.clock.time()))

    def _admit(self, job: Job, *, dry_run: bool = False) -> Charge | None:
        core = self._core
        config = core.config
        unreachable = self._pool.unavailable if self._pool is not None else None
        if unreachable is not None:  # queued jobs wait for the workers' queue; new ones are told at once
            raise WorkersUnreachable(WORKERS_UNREACHABLE_TEXT, limit="executor.redis_url", value=unreachable,
                                     retry_after=WORKERS_RETRY_S)
        guild = config.guilds.get(job.guild_id)
        # First: a banned member learns that, not a limit they could wait out (their job is never stored as
        # anything but refused; U, V and reroll come through here too, cancel and delete do not).
        if guild is not None and job.user_id in guild.banned_users:
            raise Banned()
        if core.queue.is_paused(job.lane):
            raise GuildPaused("A moderator paused /imagine in this server; try again later.", limit="paused")
        missing = core.unavailable.get(job.request.model or "")
        if missing is not None:
            why, next_try = missing
            retry_after = None if next_try is None else max(0.0, next_try - core.clock.monotonic())
            # The reason (a download error, a path) is for the log and moderators: it stays on ``value``.
            raise ModelUnavailable(model_unavailable_text(job.request.model or "", retry_after),
                                   limit=f"models.{job.request.model}", value=why, retry_after=retry_after)
        # A thread counts as its channel: allowed if it, or the channel it belongs to, is on the list.
        if guild is not None and guild.channels and job.channel_id not in guild.channels \
                and job.parent_channel_id not in guild.channels:
            channels = one_of([f"<#{channel}>" for channel in guild.channels])
            raise ChannelNotAllowed(f"/imagine isn't enabled in this channel; use it in {channels}.",
                                    allowed=guild.channels)
        limits = core.limits(job.guild_id, job.role_ids)
        admit = core.admission.check if dry_run else core.admission.admit
        return admit(job, limits, config.scheduler, core.occupancy, core.clock.monotonic(), core.clock.time())

    # --- control ------------------------------------------------------------------------------
    def cancel(self, job_id: str, *, by: Requester | None = None) -> Job:
        """Cancel a queued job at once, or interrupt a running one (its batch-mates go on).
        ``by=None`` is the bot itself; otherwise only the owner or a moderator of the job's server may."""
        core = self._core
        job = core.jobs.get(job_id)
        if job is None:
            raise JobNotFound.not_in_queue(job_id)
        if by is not None:
            by.check_may_manage(job.user_id, job.guild_id, core.config, "cancel")
        job.cancelled_by = by.user_id if by is not None else None
        if job.state is JobState.QUEUED:
            core.finish(job, JobState.CANCELLED, error=GenerationCancelled("The request was cancelled."))
        else:
            job.cancel_token.cancel()  # the executor drops this member; the outcome finishes the job
        return job

    # --- models: the start-up load (bot.scheduler.warmup) ------------------------------------------
    def hold_for_model(self, model: str | None) -> None:
        """While ``model`` loads nothing starts: jobs wait queued, in order (None: dispatch again)."""
        core = self._core
        core.held_for = model
        core.wake.set()

    @property
    def held_for(self) -> str | None:
        return self._core.held_for

    def model_unavailable(self, model: str, why: str | None, next_try: float | None = None) -> None:
        """Refuse new jobs for ``model`` until the next try at ``next_try`` (clock monotonic time) succeeds;
        ``why`` (for the log and moderators: the refusal's ``value``) None admits them again."""
        if why is None:
            self._core.unavailable.pop(model, None)
        else:
            self._core.unavailable[model] = (why, next_try)

    def measured_speed(self, seconds_per_cost: float) -> None:
        """A warm-up's measurement: the ETAs use it until the first real batch has been timed."""
        core = self._core
        if not core.eta_measured and seconds_per_cost > 0:
            core.eta.seconds_per_cost = seconds_per_cost
            self.repush_positions()

    def repush_positions(self) -> None:
        """Tell every queued job its place again (its status text changed: a model loading, say), at most
        once per ``scheduler.position_update_s``."""
        core = self._core
        core.pushed.clear()
        core.positions_dirty = True
        core.wake.set()

    def pause_guild(self, guild_id: int) -> None:
        """Stop starting this guild's jobs and refuse new ones; queued jobs keep their place."""
        self._core.queue.pause(guild_id)
        self._core.changed()

    def resume_guild(self, guild_id: int) -> None:
        self._core.queue.resume(guild_id)
        self._core.changed()

    def is_paused(self, guild_id: int) -> bool:
        return self._core.queue.is_paused(guild_id)

    # --- queries ------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        return self._core.jobs.get(job_id)

    def position(self, job_id: str) -> int | None:
        """1 = next to run; None when not queued or its guild is paused."""
        job = self._core.jobs.get(job_id)
        return self._core.locate(job)[0] if job is not None else None

    def eta(self, job_id: str) -> float | None:
        """Estimated seconds until a queued job starts, or until a running one is done (from measured seconds
        per cost unit)."""
        core = self._core
        job = core.jobs.get(job_id)
        if job is None:
            return None
        if job.state is JobState.RUNNING:
            batch = next(b for b in core.running if job in b.jobs)
            return max(0.0, batch.estimate_s - (core.clock.monotonic() - batch.started_at))
        return core.locate(job)[1]

    def snapshot(self, *, guild_id: int | None = None, user_id: int | None = None) -> QueueSnapshot:
        core = self._core

        def wanted(job: Job) -> bool:
            return (guild_id is None or job.guild_id == guild_id) and (user_id is None or job.user_id == user_id)

        queued = [QueueEntry(job, position, eta) for position, job, eta in core.ordered() if wanted(job)]
        listed = {entry.job.id for entry in queued}
        queued += [QueueEntry(job, None, None) for job in core.jobs.values()
                   if job.state is JobState.QUEUED and job.id not in listed and wanted(job)]
        running = [job for batch in core.running for job in batch.jobs if wanted(job)]
        paused = frozenset(gid for gid in core.queue.guild_lengths() if core.queue.is_paused(gid))
        return QueueSnapshot(running, queued, core.queue.guild_lengths(), len(core.queue), paused)

    @property
    def seconds_per_cost(self) -> float:
        return self._core.eta.seconds_per_cost

    @property
    def dispatch_timings(self) -> list[tuple[float, int]] | None:
        """(dispatcher CPU seconds, jobs) per batch, when built with ``record_timings=True``."""
        return self._dispatcher.timings

    def footprint(self) -> dict[str, int]:
        """Entries in the scheduler's own bookkeeping, by structure; all 0 once it is idle (no job queued or
        running): what it keeps per job never outlives the job. For diagnostics and tests."""
        core = self._core
        occupancy = core.occupancy
        return {"jobs": len(core.jobs), "keys": len(core.keys), "charges": len(core.charges),
                "positions": len(core.pushed), "by_age": len(core.by_age), "batches": len(core.running),
                "queued": len(core.queue), "guilds": len(core.queue.guild_lengths()),
                "occupancy": len(occupancy.queued_user) + len(occupancy.queued_guild) + len(occupancy.running_user)
                + len(occupancy.running_guild)}

    async def flush_notifications(self) -> None:
        await self._core.events.flush()


def model_unavailable_text(model: str, retry_after: float | None) -> str:
    """What a member reads while ``model`` cannot be loaded: when the bot tries again, and whom to tell."""
    again = "" if retry_after is None else f"; the bot tries again in {format_duration(retry_after)}"
    return f"Model {model} can't be loaded right now{again}. If this lasts, tell a moderator."
