"""The imagine feature's subscriber to job events: record every transition in storage, then let the
presenter show it. Stored before shown: a kill between the two loses nothing a user saw.

The path from a finished batch to its upload is kept short: the presenter starts every encode of the result at
once (``ResultFiles``: each image's PNG once, the grid alongside), storage writes the PNGs and "done" in one
commit while the grid is still being encoded, and the presenter uploads from memory, never reading back what was
just stored.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Protocol

from bot.core.errors import IllegalTransition, JobNotFound, Refused
from bot.core.faults import Checkpoints
from bot.discord_ui.result_files import ResultFiles
from bot.scheduler import Job, JobState, Scheduler
from bot.storage import JobRecord, JobStatus, Storage
from generation.request import GenerationResult, ProgressEvent

_log = logging.getLogger(__name__)

SAVE_FAILED = "the result could not be saved; please try again"
FEATURE = "imagine"  # ``Job.feature`` of this feature's jobs: another feature's (a contest's) are its own to show
_STATUS: dict[JobState, JobStatus] = {
    JobState.DONE: "done", JobState.FAILED: "failed", JobState.CANCELLED: "cancelled",
    JobState.REFUSED: "refused", JobState.EXPIRED: "expired",
}


class Presenter(Protocol):
    """What users see of a job (implemented on Discord by ``bot.discord_ui.presenter.DiscordPresenter``)."""

    async def queued(self, job_id: str, position: int | None, eta_s: float | None) -> None: ...

    async def started(self, job_id: str) -> None: ...

    async def progress(self, job_id: str, event: ProgressEvent, *, veiled: bool = False) -> None: ...

    def encode(self, job_id: str, result: GenerationResult) -> ResultFiles: ...

    async def finished(self, stored: JobRecord, result: GenerationResult | None,
                       files: ResultFiles | None = None) -> None: ...

    async def interrupted(self, job_id: str) -> None: ...


class JobRecorder:
    """A ``bot.scheduler.JobListener``; job events keep each job's calls in order."""

    def __init__(self, storage: Storage, presenter: Presenter, scheduler: Scheduler,
                 checkpoints: Checkpoints | None = None) -> None:
        self._storage = storage
        self._presenter = presenter
        self._scheduler = scheduler  # only asked whether it is draining: interrupted jobs then resume later
        self._checkpoints = checkpoints or Checkpoints()

    async def queued(self, job: Job, position: int | None, eta_s: float | None) -> None:
        if job.feature != FEATURE:
            return
        await self._presenter.queued(job.id, position, eta_s)

    async def position_changed(self, job: Job, position: int | None, eta_s: float | None) -> None:
        if job.feature != FEATURE:
            return
        await self._presenter.queued(job.id, position, eta_s)

    async def started(self, job: Job) -> None:
        if job.feature != FEATURE:
            return
        try:
            # One write, no read first: the write checks the lifecycle itself.
            await self._storage.update_status(job.id, "running")
            self._checkpoints.reached("running")
        except (IllegalTransition, JobNotFound):
            pass  # already running (resumed), ended meanwhile (a cancel was stored first), or gone
        await self._presenter.started(job.id)

    async def progress(self, job: Job, event: ProgressEvent) -> None:
        if job.feature != FEATURE:
            return
        # The safety checker judges finished images only: where a server's mode asks for it, previews are veiled.
        await self._presenter.progress(job.id, event, veiled=job.request.check_safety)

    async def finished(self, job: Job) -> None:
        if job.feature != FEATURE:
            return
        if job.state is JobState.REFUSED:
            # The cog tells the requester ephemerally (the refusal is raised to it); nothing public to show.
            await self._record_refusal(job)
            return
        if self._scheduler.draining and job.state is JobState.CANCELLED and job.cancelled_by is None:
            # Interrupted by the shutdown, not by a person: storage keeps it active so the next start resumes it.
            await self._presenter.interrupted(job.id)
            return
        status = _STATUS[job.state]
        result = job.result if status == "done" else None
        error = str(job.error) if job.error is not None else None
        files = self._presenter.encode(job.id, result) if result is not None else None
        try:
            stored = await self._record_end(job, status, result, error, files)
        except Exception:
            # Storage failed (disk full, locked database): the job still ends on screen, as failed.
            _log.exception("could not record the end of job %s", job.id)
            result, files = None, None
            stored = await self._record_failure(job)
        if stored is None:
            _log.warning("job %s finished but is not in storage", job.id)
            return
        await self._presenter.finished(stored, result, files)

    async def _record_failure(self, job: Job) -> JobRecord | None:
        """Store the job as failed if storage still can; else show the failure all the same (the row
        stays active, so the next start runs the job again and its result replaces this message)."""
        try:
            stored = await self._storage.get_job(job.id)
            if stored is not None and stored.active:
                stored = await self._storage.update_status(job.id, "failed", error=SAVE_FAILED)
            return stored
        except Exception:
            _log.exception("could not record job %s as failed either; showing the failure anyway", job.id)
            return unsaved_failure(job, SAVE_FAILED)

    async def handed_back(self, job: Job) -> None:
        if job.feature != FEATURE:
            return
        # Still queued in storage: the next start resumes it; its queue place means nothing until then.
        await self._presenter.interrupted(job.id)

    async def _record_end(self, job: Job, status: JobStatus, result: GenerationResult | None,
                          error: str | None, files: ResultFiles | None) -> JobRecord | None:
        try:
            if result is not None:
                assert files is not None
                pngs = await files.pngs()  # the same bytes the upload of a single image will be
                # One commit for the images (with the checker's flags: every later showing, a re-post, U or V,
                # applies the policy to them) and "done"; nothing is read first on the way to the result message.
                ended = await self._storage.store_result(job.id, pngs, result.seeds, result.nsfw,
                                                         timings=_timings(result))
            else:
                ended = await self._storage.update_status(job.id, status, error=error)
        except (IllegalTransition, JobNotFound):
            # Only when the write refuses is the job looked at (any images are stored by then).
            stored = await self._storage.get_job(job.id)
            if stored is None or not stored.active:
                return stored  # gone, or ended meanwhile (a person's cancel was stored first)
            if stored.status == "queued" and status == "done":
                await self._storage.update_status(job.id, "running")  # its "started" write was lost
            seeds, timings = (result.seeds, _timings(result)) if result is not None else (None, None)
            ended = await self._storage.update_status(job.id, status, error=error, seeds=seeds, timings=timings)
        if status == "done":
            self._checkpoints.reached("done committed")
        return ended

    async def _record_refusal(self, job: Job) -> None:
        stored = await self._storage.get_job(job.id)
        if stored is not None and stored.active:
            # The limit's key is kept apart from the text: usage figures count refusals by it.
            refusal = job.error.limit if isinstance(job.error, Refused) else None
            await self._storage.update_status(job.id, "refused", error=str(job.error) if job.error else None,
                                              refusal=refusal)


def _timings(result: GenerationResult) -> dict[str, float]:
    return {"load_s": result.timings.load_s, "denoise_s": result.timings.denoise_s,
            "decode_s": result.timings.decode_s}


def unsaved_failure(job: Job, error: str) -> JobRecord:
    """A record of a failed job built from what the scheduler knows, for when storage cannot answer."""
    now = datetime.now(UTC)
    return JobRecord(
        id=job.id, kind="imagine", status="failed", request=job.request, user_id=job.user_id,
        guild_id=job.guild_id or None, channel_id=job.channel_id or None, role_ids=tuple(job.role_ids),
        parent_job_id=None, seeds=(), error=error, interaction=None, status_message_id=None,
        result_message_id=None, created_at=now, started_at=None, finished_at=now, deleted_at=None,
        delivery="owed")
