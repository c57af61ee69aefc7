"""The scheduler's state and its synchronous transitions: enqueue, plan and start a batch, finish,
expire, positions and ETAs. No awaiting here, so every transition is atomic on the event loop."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.core.config import AppConfig, Limits, resolve_limits
from bot.core.errors import InternalFailure, JobExpired, shown_to_requester
from bot.core.text import format_duration
from bot.scheduler.clock import Clock
from bot.scheduler.fairqueue import FairQueue
from bot.scheduler.jobs import Job, JobEvents, JobListener, JobState
from bot.scheduler.limits import Admission, BucketTaken, Charge, Occupancy
from generation.errors import GenerationCancelled, ImagineError
from generation.interface import Outcome
from generation.request import CompatibilityKey, GenerationResult, compatibility_key

_log = logging.getLogger(__name__)
# Deadlines this close count as reached: float rounding must never leave the loop waiting 0 s forever.
EPSILON_S = 1e-6


def _for_requester(job: Job, outcome: object) -> ImagineError:
    """The failure as its requester sees it: as it is when it says what they can change, else a fixed text
    with a reference, logged here with the detail (exception text, a model's path) for the operator."""
    if isinstance(outcome, ImagineError) and shown_to_requester(outcome):
        return outcome
    failure = InternalFailure()
    detail = f"{type(outcome).__name__}: {outcome}" if isinstance(outcome, BaseException) else repr(outcome)
    _log.error("job %s failed (reference %s): %s", job.id, failure.reference, detail)
    return failure


class ConfigSource(Protocol):
    """Where the scheduler reads the running config (``bot.core.config_store.ConfigStore`` is one)."""

    @property
    def current(self) -> AppConfig: ...


@dataclass
class Batch:
    jobs: list[Job]
    images: int
    cost: float
    started_at: float
    estimate_s: float
    cpu_s: float = 0.0  # dispatcher CPU spent on this batch (benchmark)


class EtaModel:
    """Seconds per cost unit on this hardware: an exponential moving average of finished batches."""

    def __init__(self, seconds_per_cost: float) -> None:
        self.seconds_per_cost = seconds_per_cost

    def observe(self, cost: float, seconds: float, smoothing: float) -> None:
        if cost > 0 and seconds >= 0:
            self.seconds_per_cost += smoothing * (seconds / cost - self.seconds_per_cost)


def expired_text(max_wait_s: float) -> str:
    """What the requester of a job that waited too long reads (stored as its error; the presenter adds ⌛)."""
    return (f"This request waited {format_duration(max_wait_s)} in the queue, the longest this bot allows, and was "
            "dropped; please run it again.")


def _release(job: Job) -> None:
    """Drop a finished job's images: its subscribers took what they needed while it was being reported."""
    job.result = None


class SchedulerCore:
    def __init__(self, config: ConfigSource, clock: Clock, listener: JobListener | None, *,
                 idle_first: bool = True, on_take: BucketTaken | None = None) -> None:
        self.config_source = config
        self.clock = clock
        self.events = JobEvents()
        if listener is not None:
            self.events.subscribe(listener)
        self.queue: FairQueue[Job] = FairQueue(lambda gid: self.config.guild_weight(gid),
                                               idle_first=idle_first)
        self.occupancy = Occupancy()
        self.admission = Admission(on_take)
        self.jobs: dict[str, Job] = {}  # queued or running
        self.keys: dict[str, CompatibilityKey] = {}
        self.charges: dict[str, Charge] = {}
        # Admission order, for expiry: job ids only (stale entries are skipped lazily, and an id holds no
        # finished job, its request or its images alive while older jobs still wait).
        self.by_age: deque[str] = deque()
        self.running: list[Batch] = []
        self.eta = EtaModel(self.config.scheduler.initial_seconds_per_cost)
        self.pushed: dict[str, tuple[int | None, float | None]] = {}
        self.positions_dirty = False
        self.last_refresh = -math.inf
        self.held_for: str | None = None  # a model loading at start-up: jobs wait queued, nothing dispatches
        self.arriving = 0  # requests on their way in (being stored and admitted): see Scheduler.arriving
        self.eta_measured = False  # a real batch has been timed: a warm-up measurement no longer applies
        self.unavailable: dict[str, tuple[str, float | None]] = {}  # model -> (why, clock time of the next try)
        # Batches that may run at once: scheduler.concurrency, or a pooled executor's live workers (Scheduler sets it).
        self.slots: Callable[[], int] = lambda: self.config.scheduler.concurrency
        self.wake = asyncio.Event()  # for the dispatcher loop
        self.updated = asyncio.Event()  # for anyone else waiting on a change (drain)
        self._limits_cache: tuple[AppConfig | None, dict[tuple[int, frozenset[int]], Limits]] = (None, {})

    @property
    def config(self) -> AppConfig:
        return self.config_source.current

    def limits(self, guild_id: int, role_ids: frozenset[int]) -> Limits:
        config = self.config
        if self._limits_cache[0] is not config:
            self._limits_cache = (config, {})
        cache = self._limits_cache[1]
        key = (guild_id, role_ids)
        found = cache.get(key)
        if found is None:
            found = cache[key] = resolve_limits(config, guild_id, role_ids)
        return found

    def changed(self) -> None:
        self.positions_dirty = True
        self.wake.set()
        self.updated.set()

    # --- enqueue and finish -------------------------------------------------------------------
    def enqueue(self, job: Job, charge: Charge | None) -> None:
        now = self.clock.monotonic()
        job.state, job.enqueued_at = JobState.QUEUED, now
        self.jobs[job.id] = job
        self.keys[job.id] = compatibility_key(job.request)
        if charge is not None:
            self.charges[job.id] = charge
        self.occupancy.queue(job, +1)
        self.queue.push(job)
        self.by_age.append(job.id)
        position, eta = self.locate(job)
        self.pushed[job.id] = (position, eta)
        self.events.send(job, "queued", position, eta)
        self.changed()

    def finish(self, job: Job, state: JobState, *, result: GenerationResult | None = None,
               error: ImagineError | None = None) -> None:
        """Move a live job to its terminal (or handed-back) state, exactly once."""
        if job.id not in self.jobs or self.jobs[job.id] is not job:
            _log.error("job %s finished twice (%s, then %s); ignored", job.id, job.state.value, state.value)
            return
        del self.jobs[job.id]
        self.keys.pop(job.id, None)
        self.pushed.pop(job.id, None)
        if job.state is JobState.QUEUED:
            self.queue.remove(job)
            self.occupancy.queue(job, -1)
        elif job.state is JobState.RUNNING:
            self.occupancy.run(job, -1)
        if not self.occupancy.running_guild[job.lane] and not self.queue.guild_length(job.lane):
            self.queue.forget(job.lane)  # a light guild's next job goes to the front again
        charge = self.charges.pop(job.id, None)
        if charge is not None and state is not JobState.DONE:
            self.admission.refund(charge)  # no images, no quota used
        job.state, job.result, job.error = state, result, error
        job.finished_at = self.clock.monotonic()
        if state.terminal:
            self.events.send(job, "finished")
            if result is not None:  # every subscriber has what it needs of the images once it is done with them
                self.events.after(job.id, lambda: _release(job))
        elif state is JobState.HANDED_BACK:
            self.events.send(job, "handed_back")
        self.changed()

    def sweep_expired(self, now: float) -> float | None:
        """Expire jobs queued longer than max_wait_s; return when the next one would expire."""
        max_wait = self.config.scheduler.max_wait_s
        while self.by_age:
            job = self.jobs.get(self.by_age[0])
            if job is None or job.state is not JobState.QUEUED:
                self.by_age.popleft()
                continue
            assert job.enqueued_at is not None
            deadline = job.enqueued_at + max_wait
            if deadline - now > EPSILON_S:
                return deadline
            self.by_age.popleft()
            self.finish(job, JobState.EXPIRED, error=JobExpired(expired_text(max_wait)))
        return None

    # --- batches ------------------------------------------------------------------------------
    def _blocked(self) -> tuple[set[int], set[tuple[int, int]]]:
        """Guilds and users at their running caps (only matters with scheduler.concurrency > 1)."""
        guilds: set[int] = set()
        users: set[tuple[int, int]] = set()
        for batch in self.running:
            for job in batch.jobs:
                limits = self.limits(job.guild_id, job.role_ids)
                cap = limits.max_running_per_guild
                if cap is not None and self.occupancy.running_guild[job.lane] >= cap:
                    guilds.add(job.lane)
                cap = limits.max_running_per_user
                if cap is not None and self.occupancy.running_user[job.user_key] >= cap:
                    users.add(job.user_key)
        return guilds, users

    def image_cap(self, job: Job, executor_max: int) -> int:
        """The most images a batch headed by ``job`` may hold: the executor's limit, and its model's own
        ``max_batch_images`` (measured by ``bench.batch_sizes``) where one is set. All of a batch is one model."""
        model = self.config.generation.models.get(job.request.model or "")
        own = model.max_batch_images if model is not None else None
        return max(1, executor_max if own is None else min(executor_max, own))

    def plan(self, max_images: int) -> list[Job]:
        """The next batch in fair order: the head plus compatible jobs from the next few fair picks, up to
        ``image_cap`` images (the head alone may hold more: a job is never split here)."""
        scheduler = self.config.scheduler
        room = math.inf if scheduler.max_running is None else scheduler.max_running - self.occupancy.running_total
        if room <= 0 or not len(self.queue):
            return []
        blocked_guilds, blocked_users = self._blocked() if self.running else (set(), set())
        picks = list(self.queue.order(1 + scheduler.lookahead, blocked_guilds=blocked_guilds,
                                      blocked_users=blocked_users))
        if not picks:
            return []
        head = picks[0]
        max_images = self.image_cap(head, max_images)
        key, batch, images = self.keys[head.id], [head], head.images
        in_batch_user = {head.user_key: 1}
        in_batch_guild = {head.lane: 1}
        passed_over: set[tuple[int, int]] = set()  # keep FIFO within a user: never jump a user's own job
        for job in picks[1:]:
            if images >= max_images or len(batch) >= room:
                break
            if job.user_key in passed_over:
                continue
            limits = self.limits(job.guild_id, job.role_ids)
            user_n = self.occupancy.running_user[job.user_key] + in_batch_user.get(job.user_key, 0)
            guild_n = self.occupancy.running_guild[job.lane] + in_batch_guild.get(job.lane, 0)
            if (self.keys[job.id] != key or images + job.images > max_images
                    or (limits.max_running_per_user is not None and user_n >= limits.max_running_per_user)
                    or (limits.max_running_per_guild is not None and guild_n >= limits.max_running_per_guild)):
                passed_over.add(job.user_key)
                continue
            batch.append(job)
            images += job.images
            in_batch_user[job.user_key] = in_batch_user.get(job.user_key, 0) + 1
            in_batch_guild[job.lane] = in_batch_guild.get(job.lane, 0) + 1
        return batch

    def commit(self, jobs: list[Job]) -> Batch:
        now = self.clock.monotonic()
        self.queue.take(jobs)
        cost = sum(job.cost for job in jobs)
        batch = Batch(jobs, sum(job.images for job in jobs), cost, now, cost * self.eta.seconds_per_cost)
        self.running.append(batch)
        for job in jobs:
            self.occupancy.queue(job, -1)
            self.occupancy.run(job, +1)
            job.state, job.started_at, job.batch_size = JobState.RUNNING, now, len(jobs)
            self.pushed.pop(job.id, None)
            self.events.send(job, "started")
        self.changed()
        return batch

    def complete(self, batch: Batch, outcomes: Sequence[Outcome]) -> None:
        self.running.remove(batch)
        elapsed = self.clock.monotonic() - batch.started_at
        if all(isinstance(outcome, GenerationResult) for outcome in outcomes):
            self.eta.observe(batch.cost, elapsed, self.config.scheduler.eta_smoothing)
            self.eta_measured = True
        for job, outcome in zip(batch.jobs, outcomes, strict=True):
            if job.cancel_token.cancelled:
                error = outcome if isinstance(outcome, GenerationCancelled) else GenerationCancelled(
                    "The request was cancelled before it finished.")
                self.finish(job, JobState.CANCELLED, error=error)
            elif isinstance(outcome, GenerationResult):
                self.finish(job, JobState.DONE, result=outcome)
            elif isinstance(outcome, GenerationCancelled):
                self.finish(job, JobState.CANCELLED, error=outcome)
            else:
                self.finish(job, JobState.FAILED, error=_for_requester(job, outcome))

    # --- positions and ETAs -------------------------------------------------------------------
    def backlog_s(self) -> float:
        """Estimated seconds until the running batches are done, spread over the executor slots."""
        now = self.clock.monotonic()
        left = sum(max(0.0, b.estimate_s - (now - b.started_at)) for b in self.running)
        return left / max(1, self.slots())

    def ordered(self) -> Iterable[tuple[int, Job, float]]:
        """(position, job, seconds until it starts) for every queued job that can run, in fair order: what
        members are told ("starts in about 2 min"), so a job's own run time is not in its figure."""
        spc = self.eta.seconds_per_cost / max(1, self.slots())
        ahead = self.backlog_s()
        for position, job in enumerate(self.queue.order(), start=1):
            yield position, job, ahead
            ahead += job.cost * spc

    def locate(self, job: Job) -> tuple[int | None, float | None]:
        if job.state is not JobState.QUEUED:
            return None, None
        for position, other, eta in self.ordered():
            if other is job:
                return position, eta
        return None, None  # its guild is paused

    def refresh_positions(self, now: float) -> float | None:
        """Push changed positions/ETAs, at most once per position_update_s; return seconds to next."""
        if not self.positions_dirty:
            return None
        due = self.last_refresh + self.config.scheduler.position_update_s
        if due - now > EPSILON_S:
            return due - now
        self.positions_dirty, self.last_refresh = False, now
        seen = set()
        for position, job, eta in self.ordered():
            seen.add(job.id)
            self._push(job, position, eta)
        if len(seen) < len(self.queue):  # paused guilds' jobs have no position
            for job in list(self.jobs.values()):
                if job.state is JobState.QUEUED and job.id not in seen:
                    self._push(job, None, None)
        return None

    def _push(self, job: Job, position: int | None, eta: float | None) -> None:
        old = self.pushed.get(job.id)
        if old is not None and old[0] == position:
            old_eta = old[1]
            if (old_eta is None) == (eta is None) and (eta is None or old_eta is None
                                                       or abs(eta - old_eta) < max(10.0, 0.2 * old_eta)):
                return  # same place, ETA within noise: do not spam the owner
        self.pushed[job.id] = (position, eta)
        self.events.send(job, "position_changed", position, eta)
