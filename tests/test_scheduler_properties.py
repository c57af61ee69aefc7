"""Property tests: random arrivals, cancels, pauses and executor failures on simulated time.

Checked for every generated run: no job lost or duplicated, exactly one terminal state per job
(or handed back at shutdown), no cap ever exceeded, batches hold only compatible jobs within the
image limit (the executor's and the model's own), a guild's first job waits behind at most one
batch headed by any other guild and, behind ten flooding guilds, for the batch in progress only;
the GPU is never idle while a job waits (no batch window when idle), and a batch takes every
compatible job that waited for it, up to the limit.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core.config import AppConfig, Bucket, Limits
from bot.core.errors import Refused
from bot.core.identity import Requester
from bot.scheduler import TERMINAL_STATES, Job, JobState, Scheduler, SimulatedClock
from generation.config import GenerationConfig, ModelConfig
from generation.errors import ImagineError
from generation.request import compatibility_key
from tests.scheduler_helpers import FakeExecutor, make_config, make_job

MAX_IMAGES = 4


@dataclass
class Checker:
    """A listener that keeps its own books and checks the caps after every event."""

    config: AppConfig
    events: list[tuple[str, str]] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    n_queued: Counter[Any] = field(default_factory=Counter)
    n_running: Counter[Any] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def check(self, ok: bool, message: str) -> None:
        # listener exceptions are swallowed by the scheduler (by design), so record instead of raising
        if not ok:
            self.violations.append(message)

    def _move(self, job: Job, old: str | None, new: str | None) -> None:
        for state, counter in (("queued", self.n_queued), ("running", self.n_running)):
            delta = (new == state) - (old == state)
            for key in (("user", job.guild_id, job.user_id), ("guild", job.guild_id), ("all",)):
                counter[key] += delta
        limits, settings = self.config.limits, self.config.scheduler
        for key, count in self.n_queued.items():
            cap = {"user": limits.max_queued_per_user, "guild": limits.max_queued_per_guild,
                   "all": settings.max_queued}[key[0]]
            self.check(cap is None or count <= cap, f"queued cap exceeded: {key} {count} > {cap}")
        for key, count in self.n_running.items():
            cap = {"user": limits.max_running_per_user, "guild": limits.max_running_per_guild,
                   "all": settings.max_running}[key[0]]
            self.check(cap is None or count <= cap, f"running cap exceeded: {key} {count} > {cap}")

    def queued(self, job: Job, position: int | None, eta_s: float | None) -> None:
        self.events.append(("queued", job.id))
        self.check(job.id not in self.status, f"{job.id} queued twice")
        self.jobs[job.id] = job
        self.status[job.id] = "queued"
        self._move(job, None, "queued")

    def position_changed(self, job: Job, position: int | None, eta_s: float | None) -> None:
        self.check(self.status.get(job.id) == "queued", f"position for {job.id} in {self.status.get(job.id)}")

    def started(self, job: Job) -> None:
        self.events.append(("started", job.id))
        self.check(self.status.get(job.id) == "queued", f"{job.id} started from {self.status.get(job.id)}")
        self.status[job.id] = "running"
        self._move(job, "queued", "running")

    def progress(self, job: Job, event: object) -> None:
        self.check(self.status.get(job.id) == "running", f"progress for {job.id} in {self.status.get(job.id)}")

    def finished(self, job: Job) -> None:
        self.events.append(("finished", job.id))
        self.check(job.state in TERMINAL_STATES, f"{job.id} finished as {job.state}")
        old = self.status.get(job.id)
        self.check(old in (None, "queued", "running"), f"{job.id} finished twice")
        self.check(old is not None or job.state is JobState.REFUSED, f"{job.id} finished without being queued")
        self.status[job.id] = "finished"
        self.jobs[job.id] = job
        self._move(job, old, None)


configs = st.fixed_dictionaries({
    "max_queued_per_user": st.sampled_from([None, 1, 3]),
    "max_queued_per_guild": st.sampled_from([None, 2, 5]),
    "max_running_per_user": st.sampled_from([None, 1]),
    "max_running_per_guild": st.sampled_from([None, 1, 2]),
    "user_rate": st.sampled_from([None, Bucket(amount=2, window_s=5, burst=2)]),
    "daily_images_per_user": st.sampled_from([None, 6]),
})
schedulers = st.fixed_dictionaries({
    "max_queued": st.sampled_from([None, 8]),
    "max_running": st.sampled_from([None, 3]),
    "concurrency": st.sampled_from([1, 2]),
    "batch_window_ms": st.sampled_from([0, 30]),
    "lookahead": st.sampled_from([0, 4, 8]),
    "max_wait_s": st.sampled_from([3.0, 840.0]),
    "position_update_s": st.sampled_from([0.0, 1.0]),
})
delays = st.sampled_from([0.0] * 6 + [0.01, 0.3, 2.0, 5.0])  # mostly bursts, so queues and batches form
# (kind, delay before it, guild, user, steps, images, fate, which earlier job to cancel)
ops = st.lists(st.tuples(
    st.sampled_from(["submit"] * 8 + ["cancel", "pause"]), delays, st.integers(1, 4), st.integers(1, 2),
    st.sampled_from([20, 25]), st.sampled_from([1, 1, 1, 2, 4]), st.sampled_from(["ok"] * 8 + ["fail", "crash"]),
    st.integers(0, 40),
), min_size=10, max_size=50)


async def scenario(clock: SimulatedClock, limits: dict[str, Any], sched: dict[str, Any], plan: list[tuple[Any, ...]],
                   finish: bool, model_cap: int | None = None
                   ) -> tuple[Checker, FakeExecutor, list[Job], list[Job], list[Job]]:
    generation = GenerationConfig(models={"tiny": ModelConfig(source="builtin:tiny", max_batch_images=model_cap)})
    config = make_config(limits=Limits(guild_rate=None, **limits), generation=generation, **sched)
    checker = Checker(config)
    executor = FakeExecutor(clock, max_batch_images=MAX_IMAGES,
                            duration=lambda batch: 1.0 + 0.3 * sum(r.count for r in batch),
                            fail=lambda r: r.prompt.endswith("fail"),
                            crash=lambda batch: any(r.prompt.endswith("crash") for r in batch))
    scheduler = Scheduler(executor, config, clock=clock, listener=checker)
    await scheduler.start()
    admitted: list[Job] = []
    refused: list[Job] = []
    paused: set[int] = set()
    for n, op in enumerate(plan):
        await clock.sleep(op[1])
        kind, _, guild, user, steps, count, fate, target = op
        if kind == "submit":
            job = make_job(guild, user, job_id=f"j{n}-{fate}", prompt=f"j{n}-{fate}", steps=steps, count=count)
            try:
                admitted.append(scheduler.submit(job))
            except Refused:
                refused.append(job)
        elif kind == "cancel" and admitted:
            job = admitted[target % len(admitted)]
            try:
                scheduler.cancel(job.id, by=Requester(job.user_id, job.guild_id))
            except ImagineError:
                assert job.state.terminal or job.state is JobState.RUNNING
        elif kind == "pause":
            (scheduler.resume_guild if guild in paused else scheduler.pause_guild)(guild)
            paused ^= {guild}
    handed = await scheduler.drain(finish_queued=finish)
    await scheduler.flush_notifications()
    return checker, executor, admitted, refused, handed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs, schedulers, ops, st.booleans(), st.sampled_from([None, None, 1, 2, 8]))
def test_every_job_accounted_for_caps_kept_batches_compatible(limits: dict[str, Any], sched: dict[str, Any],
                                                               plan: list[tuple[Any, ...]], finish: bool,
                                                               model_cap: int | None) -> None:
    async def run() -> tuple[Checker, FakeExecutor, list[Job], list[Job], list[Job]]:
        clock = SimulatedClock()
        return await clock.run_until_done(scenario(clock, limits, sched, plan, finish, model_cap))

    checker, executor, admitted, refused, handed = asyncio.run(run())
    assert not checker.violations, checker.violations[:5]
    finished = Counter(job_id for kind, job_id in checker.events if kind == "finished")
    started = Counter(job_id for kind, job_id in checker.events if kind == "started")
    # refused: finished once as REFUSED, never queued
    for job in refused:
        assert job.state is JobState.REFUSED and finished[job.id] == 1 and checker.status[job.id] == "finished"
    # admitted: exactly one terminal state, or handed back (never both)
    handed_ids = {job.id for job in handed}
    assert len(handed_ids) == len(handed)
    for job in admitted:
        if job.id in handed_ids:
            assert job.state is JobState.HANDED_BACK and finished[job.id] == 0 and started[job.id] == 0
        else:
            assert job.state in TERMINAL_STATES and finished[job.id] == 1, (job.id, job.state)
        assert started[job.id] <= 1
        if job.state is JobState.DONE:
            assert started[job.id] == 1 and not job.id.endswith(("fail", "crash"))
    # executor: each job at most once, in a compatible batch within the image limit
    seen = Counter(request.prompt for call in executor.calls for request in call)
    assert all(count == 1 for count in seen.values())
    assert set(seen) == {job_id for job_id, n in started.items() if n}
    for call in executor.calls:
        assert len({compatibility_key(request) for request in call}) == 1
        assert len(call) == 1 or sum(request.count for request in call) <= min(MAX_IMAGES, model_cap or MAX_IMAGES)
    if not finish:
        assert all(job.state is not JobState.QUEUED for job in admitted)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 3), st.integers(1, 4), st.sampled_from([10, 20, 25, 30]),
                       st.sampled_from([1, 2, 4])), min_size=5, max_size=40),
    st.floats(0.0, 20.0),
    st.sampled_from([20, 25]),
    st.sampled_from([0, 30]),
    st.sampled_from([0, 8]),
    st.sampled_from([{}, {1: 4.0}, {2: 0.25}]),
)
def test_a_light_guild_waits_behind_at_most_one_batch_per_flooding_guild(
        flood: list[tuple[int, int, int, int]], arrival: float, light_steps: int, window: int, lookahead: int,
        weights: dict[int, float]) -> None:
    from bot.core.config import GuildConfig

    async def run() -> tuple[Checker, FakeExecutor, Job]:
        clock = SimulatedClock()
        config = make_config(batch_window_ms=window, lookahead=lookahead,
                             guilds={gid: GuildConfig(weight=w) for gid, w in weights.items()})
        checker = Checker(config)
        executor = FakeExecutor(clock, duration=lambda batch: 0.5 + 0.2 * sum(r.count for r in batch))
        scheduler = Scheduler(executor, config, clock=clock, listener=checker)
        await scheduler.start()
        for n, (guild, user, steps, count) in enumerate(flood):
            scheduler.submit(make_job(guild, user, job_id=f"f{n}", prompt=f"g{guild}", steps=steps, count=count))
        await clock.advance(arrival)
        light = scheduler.submit(make_job(9, 1, job_id="light", prompt="g9", steps=light_steps))
        await clock.run_until_done(scheduler.drain(finish_queued=True))
        return checker, executor, light

    checker, executor, light = asyncio.run(run())
    assert not checker.violations, checker.violations[:5]
    assert light.state is JobState.DONE
    arrived = checker.events.index(("queued", "light"))
    started = checker.events.index(("started", "light"))
    heads_between = Counter(
        executor.calls[i][0].prompt
        for i, n in enumerate(_batch_starts(checker.events)) if arrived < n < started)
    assert all(count <= 1 for count in heads_between.values()), heads_between


def _batch_starts(events: list[tuple[str, str]]) -> list[int]:
    """Event index of each batch's first "started" (members of one batch are announced together)."""
    starts = []
    previous = None
    for index, (kind, _) in enumerate(events):
        if kind == "started" and previous != "started":
            starts.append(index)
        previous = kind
    return starts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(1, 10), st.integers(1, 4), st.sampled_from([10, 20, 25, 30]),
                       st.sampled_from([1, 2, 4])), min_size=60, max_size=120),
    st.lists(st.floats(12.0, 60.0), min_size=1, max_size=4),
    st.sampled_from([20, 25]),
    st.sampled_from([0, 8]),
    st.sampled_from([{}, {1: 4.0}, {2: 0.25, 3: 3.0}]),
)
def test_a_light_guild_behind_ten_flooding_guilds_waits_for_the_batch_in_progress_only(
        flood: list[tuple[int, int, int, int]], arrivals: list[float], light_steps: int, lookahead: int,
        weights: dict[int, float]) -> None:
    """Ten guilds queue their floods at t=0; by t=12 each has had its first (new-guild) batch, so from then on
    they are busy guilds. A light guild arriving then starts in the very next batch, whatever the flood."""
    from bot.core.config import GuildConfig

    async def run() -> tuple[Checker, FakeExecutor]:
        clock = SimulatedClock()
        config = make_config(lookahead=lookahead, guilds={gid: GuildConfig(weight=w) for gid, w in weights.items()})
        checker = Checker(config)
        # at most 0.5 + 0.2 x 4 = 1.3 s a batch: the ten flooders' first batches have all begun by t=11.7
        executor = FakeExecutor(clock, duration=lambda batch: 0.5 + 0.2 * sum(r.count for r in batch))
        scheduler = Scheduler(executor, config, clock=clock, listener=checker)
        await scheduler.start()
        for n, (guild, user, steps, count) in enumerate(flood):
            scheduler.submit(make_job(guild, user, job_id=f"f{n}", prompt=f"g{guild}", steps=steps, count=count))
        for n, at in enumerate(sorted(arrivals)):
            await clock.advance(at - clock.monotonic())
            scheduler.submit(make_job(20 + n, 1, job_id=f"light{n}", prompt=f"l{n}", steps=light_steps))
        await clock.run_until_done(scheduler.drain(finish_queued=True))
        return checker, executor

    checker, executor = asyncio.run(run())
    assert not checker.violations, checker.violations[:5]
    starts = _batch_starts(checker.events)
    for n in range(len(arrivals)):
        arrived = checker.events.index(("queued", f"light{n}"))
        started = checker.events.index(("started", f"light{n}"))
        heads = [executor.calls[i][0].prompt for i, index in enumerate(starts) if arrived < index < started]
        # only other light guilds that arrived first (each new too) may go before it
        assert all(head.startswith("l") for head in heads), (n, heads)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([0.0] * 4 + [0.05, 0.4, 1.0, 3.0]), st.integers(1, 3), st.sampled_from([1, 2])),
             min_size=1, max_size=30),
    st.sampled_from([0, 30, 5000]),
)
def test_the_gpu_never_idles_while_a_job_waits_and_a_batch_takes_all_that_waited(
        arrivals: list[tuple[float, int, int]], window: int) -> None:
    """Natural batching, concurrency 1, compatible jobs: a job that finds the GPU idle starts at once (no batch
    window), and each batch holds every job that was waiting when it started, up to the executor's limit."""

    async def run() -> tuple[list[Job], FakeExecutor]:
        clock = SimulatedClock()
        executor = FakeExecutor(clock, duration=lambda batch: 1.0 + 0.25 * sum(r.count for r in batch))
        scheduler = Scheduler(executor, make_config(batch_window_ms=window), clock=clock)
        await scheduler.start()
        jobs = []
        for n, (gap, guild, count) in enumerate(arrivals):
            await clock.advance(gap)
            jobs.append(scheduler.submit(make_job(guild, n, job_id=f"j{n}", count=count)))
        await clock.run_until_done(scheduler.drain(finish_queued=True))
        return jobs, executor

    jobs, _ = asyncio.run(run())
    assert all(job.state is JobState.DONE for job in jobs)
    batches: dict[float, list[Job]] = {}
    for job in jobs:
        assert job.started_at is not None and job.finished_at is not None
        batches.setdefault(job.started_at, []).append(job)
    ends = sorted((members[0].started_at or 0.0, members[0].finished_at or 0.0) for members in batches.values())
    idle = [(0.0, ends[0][0])] + [(end, begin) for (_, end), (begin, _) in itertools.pairwise(ends)]
    for job in jobs:
        assert job.enqueued_at is not None and job.started_at is not None
        for begin, end in idle:  # waiting through any stretch with nothing running: never
            assert min(job.started_at, end) <= max(job.enqueued_at, begin), (job.id, job.enqueued_at, begin, end)
    for start, members in batches.items():
        waited = [job for job in jobs if job.enqueued_at is not None and job.enqueued_at < start
                  and job.started_at is not None and job.started_at >= start]
        images = sum(job.images for job in members)
        left_out = [job for job in waited if job not in members]
        assert not left_out or images + min(job.images for job in left_out) > MAX_IMAGES, (start, left_out)
