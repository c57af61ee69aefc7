"""The dispatch loop: picks batches in fair order, runs them on the executor and records what became
of each job. Only this module awaits the executor.

Natural batching: a job that finds the GPU idle (no batch running) starts at once, alone if it is
alone; jobs that arrive while a batch runs queue up, and the compatible ones start together, in fair
order, as soon as it ends. Waiting on a timer when idle would only add latency (the issue measured 30 ms on
every lone job) and gain nothing. ``scheduler.batch_window_ms`` bounds two waits for batch-mates that are
known to exist, each counted from when the batch's head was queued, and only while the batch is not full:

- requests already on their way in (``Scheduler.arriving``: received, still being stored and admitted) hold
  an idle GPU, so that a burst starts as full batches instead of a lone first job and the rest behind it;
- with ``concurrency`` > 1, a free slot waits while another batch runs, since the other slots are busy."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from bot.core.jobcontext import about_jobs
from bot.core.tasks import wait_event
from bot.scheduler.core import EPSILON_S, Batch, SchedulerCore
from bot.scheduler.jobs import Job, JobState
from generation.errors import GenerationCancelled, GenerationFailed, ImagineError
from generation.interface import Executor, Outcome
from generation.request import ProgressEvent

_log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, core: SchedulerCore, executor: Executor, *, record_timings: bool = False) -> None:
        self.core = core
        self.executor = executor
        self.tasks: set[asyncio.Task[None]] = set()
        self.batch_done = asyncio.Event()
        self.hold_queue = False  # draining: start nothing new
        self.stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._window_deadline: float | None = None
        # (cpu seconds, jobs) per dispatched batch when record_timings: the benchmark reads it
        self.timings: list[tuple[float, int]] | None = [] if record_timings else None

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    def start(self) -> None:
        if not self.running:
            self.stopping = False
            self._loop_task = asyncio.create_task(self._loop(), name="imagine-dispatcher")

    async def stop(self) -> None:
        self.stopping = True
        self.core.wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None

    async def _loop(self) -> None:
        core, clock = self.core, self.core.clock
        while not self.stopping:
            core.wake.clear()
            try:
                timeout = self._step(clock.monotonic())
            except Exception:  # a bug here must not silently stop the bot's only GPU queue
                _log.exception("dispatcher step failed; retrying in 1 s")
                timeout = 1.0
            if timeout != 0.0:
                await wait_event(core.wake, clock.sleep, timeout)

    def _step(self, now: float) -> float | None:
        """Do what can be done now; return how long to wait for a change (0: go again at once)."""
        core = self.core
        cpu = time.thread_time()
        expiry = core.sweep_expired(now)
        refresh = core.refresh_positions(now)
        if not self.hold_queue and core.held_for is None and len(core.running) < core.slots():
            max_images = max(1, self.executor.max_batch_images)
            jobs = core.plan(max_images)
            if jobs:
                wait = self._window_left(jobs, max_images, now)
                if wait is not None:
                    return wait  # another batch runs and this one has room: wait briefly for batch-mates
                batch = core.commit(jobs)
                batch.cpu_s = time.thread_time() - cpu
                self._launch(batch)
                return 0.0
            self._window_deadline = None
        pending = [wait for wait in (None if expiry is None else expiry - now, refresh) if wait is not None]
        return max(EPSILON_S, min(pending)) if pending else None

    def _window_left(self, jobs: list[Job], max_images: int, now: float) -> float | None:
        """Seconds the planned batch should still wait for batch-mates; None: start it now (see module
        docstring: only while requests are on their way in or another batch runs, and only while it is not
        full)."""
        core = self.core
        window_s = core.config.scheduler.batch_window_ms / 1000
        images = sum(job.images for job in jobs)
        mates_coming = core.arriving > 0 or bool(core.running)
        if not mates_coming or window_s <= 0 or images >= core.image_cap(jobs[0], max_images):
            self._window_deadline = None
            return None
        if self._window_deadline is None:
            assert jobs[0].enqueued_at is not None
            self._window_deadline = jobs[0].enqueued_at + window_s
        left = self._window_deadline - now
        if left > EPSILON_S:
            return left
        self._window_deadline = None
        return None

    def _launch(self, batch: Batch) -> None:
        self.batch_done.clear()
        with about_jobs(*(job.id for job in batch.jobs)):  # the batch's log lines name its jobs
            task = asyncio.create_task(self._execute(batch), name=f"imagine-batch-{batch.jobs[0].id}")
        self.tasks.add(task)
        task.add_done_callback(lambda ended: self._ended(ended, batch))

    def _ended(self, task: asyncio.Task[None], batch: Batch) -> None:
        self.tasks.discard(task)
        if any(running is batch for running in self.core.running):
            # Cancelled before its first step, so _execute never ran to record it: without this the batch would
            # hold its slot for good, and a drain would wait for it forever.
            stopped = GenerationCancelled("The bot stopped while this request was running.")
            try:
                self.core.complete(batch, [stopped] * len(batch.jobs))
            finally:
                self.batch_done.set()
                self.core.wake.set()

    async def _execute(self, batch: Batch) -> None:
        core = self.core
        jobs = batch.jobs

        def on_progress(event: ProgressEvent) -> None:
            for job in jobs:
                if job.state is JobState.RUNNING and not job.cancel_token.cancelled:
                    core.events.send(job, "progress", event)

        cancelled = False
        outcomes: Sequence[Outcome]
        try:
            outcomes = await self.executor.run([job.request for job in jobs], on_progress,
                                               cancel_tokens=[job.cancel_token for job in jobs])
            if len(outcomes) != len(jobs):
                raise GenerationFailed(f"the executor returned {len(outcomes)} results for {len(jobs)} requests")
        except asyncio.CancelledError:
            cancelled = True
            outcomes = [GenerationCancelled("The bot stopped while this request was running.")] * len(jobs)
        except ImagineError as exc:
            outcomes = [exc] * len(jobs)
        except Exception as exc:
            _log.exception("executor failed on a batch of %d", len(jobs))
            failure = GenerationFailed(f"The GPU worker failed ({type(exc).__name__}); please try again.")
            outcomes = [failure] * len(jobs)
        cpu = time.thread_time()
        try:
            core.complete(batch, outcomes)
        finally:
            if self.timings is not None:
                self.timings.append((batch.cpu_s + time.thread_time() - cpu, len(jobs)))
            self.batch_done.set()
            core.wake.set()
        if cancelled:
            raise asyncio.CancelledError

    def has_work(self) -> bool:
        """Whether a batch runs or one could start now (not counting paused guilds)."""
        return bool(self.core.running) or bool(self.core.plan(max(1, self.executor.max_batch_images)))

    def cancel_running(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    async def wait_batches(self, wait_s: float | None) -> bool:
        """Wait until no batch runs; False if ``wait_s`` (clock seconds) passed first."""
        clock = self.core.clock
        deadline = None if wait_s is None else clock.monotonic() + wait_s
        while self.core.running:
            self.batch_done.clear()
            left = None if deadline is None else deadline - clock.monotonic()
            if left is not None and left <= 0:
                return False
            await wait_event(self.batch_done, clock.sleep, left)
        return True
