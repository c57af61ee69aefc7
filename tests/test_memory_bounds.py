"""Memory stays bounded: a thousand jobs through the real scheduler leave no images and no bookkeeping
behind, even while an old job waits at the head of the queue (expiry order) and whoever holds the
finished ``Job`` objects keeps them. Memory bounds, not timings: simulated time, a fake executor."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from PIL import Image

from bot.scheduler import Job, JobEvents, JobState, Scheduler, SimulatedClock
from generation.interface import CancelToken, Outcome, ProgressCallback
from generation.request import GenerationRequest, GenerationResult
from tests.scheduler_helpers import FakeExecutor, make_config, make_job

JOBS = 1000
SIDE = 256  # 256 KiB of pixels per image: a thousand kept alive would be 250 MiB
RSS_BOUND = 50 * 2**20


@dataclass
class PictureExecutor(FakeExecutor):
    """The fake executor, with a small flat image per seed in each result."""

    async def run(self, batch: Sequence[GenerationRequest], on_progress: ProgressCallback | None = None, *,
                  cancel_tokens: Sequence[CancelToken] | None = None) -> list[Outcome]:
        outcomes = await super().run(batch, on_progress, cancel_tokens=cancel_tokens)
        self.calls.clear()
        return [replace(outcome, images=[Image.new("RGB", (SIDE, SIDE), (seed % 256, 0, 0))
                                         for seed in outcome.seeds])
                if isinstance(outcome, GenerationResult) else outcome for outcome in outcomes]


class TakesImages:
    """A subscriber that uses the images while it hears ``finished``, as the bot's recorder does; with
    ``keep`` it also keeps every finished ``Job`` (as a stats feature or a /queue snapshot might)."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.pixels = 0
        self.states: dict[str, JobState] = {}
        self.kept: list[Job] = []
        self.waiting: tuple[int, asyncio.Future[None]] | None = None

    async def finished(self, job: Job) -> None:
        await asyncio.sleep(0)  # async, like the recorder: the images must outlive the publisher's call
        if job.result is not None:
            self.pixels += sum(image.width * image.height for image in job.result.images)
        self.states[job.id] = job.state
        if self.keep:
            self.kept.append(job)
        if self.waiting is not None and len(self.states) >= self.waiting[0] and not self.waiting[1].done():
            self.waiting[1].set_result(None)

    def until(self, count: int) -> asyncio.Future[None]:
        self.waiting = (count, asyncio.get_running_loop().create_future())
        return self.waiting[1]


def live_images() -> int:
    gc.collect()
    return sum(1 for thing in gc.get_objects() if isinstance(thing, Image.Image))


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("keep", [False, True], ids=["jobs-dropped", "jobs-kept-by-a-subscriber"])
async def test_a_thousand_jobs_leave_no_images_and_no_bookkeeping_behind(keep: bool) -> None:
    clock = SimulatedClock()
    listener = TakesImages(keep)
    scheduler = Scheduler(PictureExecutor(clock), make_config(max_wait_s=86400), clock=clock, listener=listener)
    await scheduler.start()
    # An old job of a paused server waits at the head of the expiry order the whole time.
    stuck = make_job(guild=99, user=1)
    scheduler.submit(stuck)
    scheduler.pause_guild(99)

    async def run(count: int, **request: Any) -> None:
        done = listener.until(len(listener.states) + count)
        for n in range(count):
            scheduler.submit(make_job(guild=1 + n % 3, user=n % 7, **request))
        await clock.run_until_done(done)
        await scheduler.flush_notifications()

    await run(40)  # warm-up: imports, caches, allocator arenas
    images_before, rss_before = live_images(), rss_bytes()
    for _ in range(JOBS // 100):
        await run(100, size=64)
    images_after, rss_after = live_images(), rss_bytes()
    scheduler.cancel(stuck.id)
    await scheduler.flush_notifications()
    footprint = scheduler.footprint()
    await scheduler.stop()

    print(f"\n{JOBS} jobs of one {SIDE}x{SIDE} image ({'kept' if keep else 'dropped'} by the subscriber): "
          f"PIL images alive {images_before} -> {images_after}; RSS {rss_before / 2**20:.1f} -> "
          f"{rss_after / 2**20:.1f} MiB (+{(rss_after - rss_before) / 2**20:.1f} MiB); scheduler {footprint}")
    assert list(listener.states.values()).count(JobState.DONE) == 40 + JOBS
    assert listener.pixels == (40 + JOBS) * SIDE * SIDE  # every subscriber saw every image...
    assert all(job.result is None for job in listener.kept)  # ...and then the scheduler let go of them
    assert images_after <= images_before
    assert set(footprint.values()) == {0}, footprint
    assert rss_after - rss_before < RSS_BOUND


async def test_the_publisher_hears_when_every_subscriber_is_done_with_a_job() -> None:
    """``JobEvents.after``: at once when no call is running, else once the last subscriber's call ended,
    whether it returned or raised."""
    hub = JobEvents()
    gate = asyncio.Event()
    heard: list[str] = []

    class Slow:
        async def finished(self, job: Job) -> None:
            await gate.wait()

    class Failing:
        async def finished(self, job: Job) -> None:
            raise RuntimeError("a broken subscriber")

    job = make_job()
    hub.after(job.id, lambda: heard.append("idle"))
    assert heard == ["idle"]
    hub.subscribe(Slow())
    hub.subscribe(Failing())
    hub.send(job, "finished")
    hub.after(job.id, lambda: heard.append("done"))
    await asyncio.sleep(0)  # a turn of the loop: both calls start
    assert heard == ["idle"]  # the slow one is still at it
    gate.set()
    await hub.flush()
    assert heard == ["idle", "done"]
