"""The contests feature's job-event listener: record each of its jobs' transitions, then show the member their
images privately. Stored before shown: the images are saved and the job is ``done`` before anyone sees them,
and the job stays owed (``jobs.delivery``) until the private message was accepted, so a restart delivers it.

Every feature hears every job (``Services.events``); this one acts only on the jobs it submitted
(``Job.feature``), which are linked to their round in ``contest_jobs``. The imagine feature likewise
ignores these jobs, so an entry's images never reach a channel before its round's results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from bot.core.errors import IllegalTransition, JobNotFound
from bot.features.contests.service import FEATURE
from bot.scheduler import Job, JobState, NullListener, Scheduler
from bot.storage import JobRecord, JobStatus, Storage

_log = logging.getLogger(__name__)

SAVE_FAILED = "the images could not be saved; please try again"
_STATUS: dict[JobState, JobStatus] = {
    JobState.DONE: "done", JobState.FAILED: "failed", JobState.CANCELLED: "cancelled", JobState.EXPIRED: "expired",
}


class Delivery(Protocol):
    """Shows a member the end of their try, privately (``delivery.PrivateDelivery`` on Discord)."""

    async def deliver(self, stored: JobRecord, pngs: list[bytes] | None = None) -> None: ...


class ContestRecorder(NullListener):
    """A ``bot.scheduler.JobListener`` for contest jobs."""

    def __init__(self, storage: Storage, scheduler: Scheduler, delivery: Delivery) -> None:
        self._storage = storage
        self._scheduler = scheduler  # only asked whether it is draining: interrupted jobs resume on the next start
        self._delivery = delivery

    async def started(self, job: Job) -> None:
        if job.feature != FEATURE:
            return
        with contextlib.suppress(IllegalTransition, JobNotFound):
            stored = await self._storage.get_job(job.id)
            if stored is not None and stored.status == "queued":
                await self._storage.update_status(job.id, "running")

    async def finished(self, job: Job) -> None:
        if job.feature != FEATURE:
            return
        if job.state is JobState.REFUSED:  # the command that asked says why, privately; only the record is left
            with contextlib.suppress(IllegalTransition):
                stored = await self._storage.get_job(job.id)
                if stored is not None and stored.active:
                    await self._storage.update_status(job.id, "refused", error=str(job.error) if job.error else None)
            return
        if self._scheduler.draining and job.state is JobState.CANCELLED and job.cancelled_by is None:
            return  # interrupted by the shutdown: still active in storage, it resumes on the next start
        pngs: list[bytes] | None = None
        try:
            pngs = await self._record_end(job)
        except Exception:
            _log.exception("could not record the end of contest job %s", job.id)
            pngs = None
            with contextlib.suppress(Exception):
                await self._storage.update_status(job.id, "failed", error=SAVE_FAILED)
        stored = await self._storage.get_job(job.id)
        if stored is None or stored.active:
            _log.warning("contest job %s ended but its end is not stored; the next start runs it again", job.id)
            return
        await self._delivery.deliver(stored, pngs if stored.status == "done" else None)

    async def _record_end(self, job: Job) -> list[bytes] | None:
        status = _STATUS[job.state]
        result = job.result if status == "done" else None
        pngs: list[bytes] | None = None
        if result is not None:
            pngs = list(await asyncio.gather(*(asyncio.to_thread(result.png_bytes, index, compress_level=1)
                                               for index in range(len(result.images)))))
            await self._storage.save_result_images(job.id, pngs, result.seeds)
        stored = await self._storage.get_job(job.id)
        if stored is None or not stored.active:
            return pngs
        if stored.status == "queued" and status == "done":
            await self._storage.update_status(job.id, "running")  # its "started" write was lost
        await self._storage.update_status(job.id, status, error=str(job.error) if job.error is not None else None,
                                          seeds=result.seeds if result is not None else None)
        return pngs
