"""``Storage``: jobs, their result images and guild settings, over SQLAlchemy 2 async.

SQLite (aiosqlite) by default; PostgreSQL works by changing the URL (``postgresql+asyncpg://...``).
Database calls run in the driver's thread and image files are written and read with
``asyncio.to_thread``, so nothing here blocks the event loop. Methods return frozen records
(``JobRecord``, ``ResultImage``), never live ORM objects, so callers cannot trigger lazy loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.core.errors import IllegalTransition, JobNotFound, StorageError
from bot.storage import images, retention
from bot.storage.db import default_url, make_engine
from bot.storage.migrations import current_version, migrate
from bot.storage.models import GuildSettingsRow, JobRow, ResultRow
from bot.storage.records import (
    JOB_KINDS,
    TERMINAL_STATUSES,
    TRANSITIONS,
    Delivery,
    ImagesMade,
    InteractionRef,
    JobKind,
    JobRecord,
    JobStatus,
    ResultImage,
)
from bot.storage.retention import PurgeReport, RetentionPolicy
from bot.storage.serialization import request_from_dict, request_to_dict
from generation.request import GenerationRequest

_log = logging.getLogger(__name__)
CANCELLED_ERROR = "The request was cancelled."  # a cancelled job's stored error (its status says "✖ Cancelled.")


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def _read_back(session: AsyncSession, job_id: str) -> JobRecord:
    """The job as the write just made it, read in the write's own transaction: a second session and
    transaction for the read cost more than the write itself."""
    row = await session.get(JobRow, job_id, populate_existing=True)
    if row is None:
        raise JobNotFound.not_stored(job_id)
    return _to_job(row)


async def _move(session: AsyncSession, row: JobRow, status: JobStatus, now: datetime, *, error: str | None = None,
                seeds: Sequence[int] | None = None, timings: dict[str, float] | None = None,
                refusal: str | None = None) -> JobRecord:
    """``Storage.update_status`` within a transaction that holds the job's ``row``."""
    job_id = row.id
    current = cast(JobStatus, row.status)
    if status not in TRANSITIONS[current]:
        raise IllegalTransition(job_id, current, status, TRANSITIONS[current])
    values: dict[str, Any] = {"status": status}
    if status == "running":
        values["started_at"] = now
    elif status == "queued":
        values["started_at"] = None  # re-queued after a restart: it will start again
    if status in TERMINAL_STATUSES:
        values["finished_at"] = now
        # The end is owed to the user until Discord accepts it (a refusal is answered at once,
        # in the same interaction, so nothing stays owed for it).
        values["delivery"] = "delivered" if status == "refused" else "owed"
        values["delivery_attempts"], values["next_delivery_at"] = 0, None
    if status == "refused":
        values["init_image"] = None  # never ran, never will: its input image is not kept
        values["refusal"] = _refusal(refusal)
    if error is not None:
        values["error"] = error
    if seeds is not None:
        values["seeds"] = list(seeds)
    if timings is not None:
        values["timings"] = dict(timings)
    statement = update(JobRow).where(JobRow.id == job_id, JobRow.status == current).values(**values)
    result = cast(CursorResult[Any], await session.execute(statement))
    if result.rowcount != 1:
        raise IllegalTransition(job_id, current, status, (), raced=True)
    return await _read_back(session, job_id)


def _to_job(row: JobRow) -> JobRecord:
    interaction = None
    if row.application_id is not None and row.interaction_token and row.token_created_at is not None:
        interaction = InteractionRef(row.application_id, row.interaction_token, row.token_created_at)
    return JobRecord(
        id=row.id, kind=cast(JobKind, row.kind), status=cast(JobStatus, row.status),
        request=request_from_dict(row.request, row.init_image), user_id=row.user_id, guild_id=row.guild_id,
        channel_id=row.channel_id, role_ids=tuple(row.role_ids), parent_job_id=row.parent_job_id,
        seeds=tuple(row.seeds), error=row.error, interaction=interaction, status_message_id=row.status_message_id,
        result_message_id=row.result_message_id, created_at=row.created_at, started_at=row.started_at,
        finished_at=row.finished_at, deleted_at=row.deleted_at, timings=dict(row.timings),
        delivery=cast(Delivery | None, row.delivery), delivery_attempts=row.delivery_attempts or 0,
        next_delivery_at=row.next_delivery_at, refusal=row.refusal,
    )


def images_of_job() -> ColumnElement[int]:
    """SQL for the number of images a job made (or asks for): its seeds, else its request's count, else 1.
    Read from two small JSON columns, so sums over many jobs never load a row's images."""
    return func.coalesce(func.nullif(func.json_array_length(JobRow.seeds), 0),
                         JobRow.request["count"].as_integer(), 1)


REFUSAL_MAX_CHARS = 64  # the column's width; a limit's key is far shorter, a model's name could be long


def _refusal(key: str | None) -> str | None:
    return key[:REFUSAL_MAX_CHARS] if key is not None else None


def _of_kinds(kinds: Iterable[JobKind] | None) -> list[ColumnElement[bool]]:
    return [] if kinds is None else [JobRow.kind.in_(list(kinds))]


class Storage:
    """The bot's database. ``await open()`` creates the data dir and migrates; ``await close()`` at the end."""

    def __init__(
        self, data_dir: Path, url: str | None = None, *, clock: Callable[[], datetime] = _utc_now, echo: bool = False
    ) -> None:
        self.data_dir = data_dir
        self.url = url or default_url(data_dir)
        self._clock = clock
        self._echo = echo
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._requeue_lock = asyncio.Lock()
        self._requeued = False

    async def open(self) -> None:
        await asyncio.to_thread(lambda: (self.data_dir / images.IMAGES_DIR).mkdir(parents=True, exist_ok=True))
        engine = make_engine(self.url, echo=self._echo)
        try:
            async with engine.begin() as conn:
                applied = await conn.run_sync(migrate)
        except BaseException:
            await engine.dispose()  # a refused or failed migration must not leave server connections open
            raise
        if applied:
            _log.info("database %s migrated through versions %s", engine.url.render_as_string(), applied)
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
        self._engine, self._sessions = None, None

    async def __aenter__(self) -> Storage:
        await self.open()
        return self

    async def __aexit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    def _session(self) -> AsyncSession:
        if self._sessions is None:
            raise StorageError("storage is not open; call await storage.open() first")
        return self._sessions()

    def session(self) -> AsyncSession:
        """A session on the bot's database for a feature's own tables (its ``tables.py``, created by a step of
        the one migration chain); use it as ``async with storage.session() as session, session.begin():``."""
        return self._session()

    async def ping(self) -> None:
        """A trivial query: returns once the database answers, raises when it does not (readiness checks)."""
        async with self._session() as session:
            await session.execute(select(1))

    async def schema_version(self) -> int:
        if self._engine is None:
            raise StorageError("storage is not open; call await storage.open() first")
        async with self._engine.connect() as conn:
            return await conn.run_sync(current_version)

    # Jobs

    async def create_job(
        self,
        request: GenerationRequest,
        *,
        user_id: int,
        guild_id: int | None = None,
        channel_id: int | None = None,
        role_ids: Iterable[int] = (),
        kind: JobKind = "imagine",
        parent_job_id: str | None = None,
        interaction: InteractionRef | None = None,
        status: JobStatus = "queued",
        refusal: str | None = None,
    ) -> JobRecord:
        """Store a new job (status ``queued``, or ``refused`` to record a refusal, with the key of the limit
        that refused it as ``refusal``) and return it."""
        if kind not in JOB_KINDS:
            raise ValueError(f"job kind {kind!r} is unknown; allowed: {', '.join(JOB_KINDS)}")
        if status not in ("queued", "refused"):
            raise ValueError(f"a new job starts queued or refused, not {status}")
        now = self._clock()
        row = JobRow(
            id=uuid.uuid4().hex, kind=kind, parent_job_id=parent_job_id, guild_id=guild_id, channel_id=channel_id,
            user_id=user_id, role_ids=list(role_ids), request=request_to_dict(request),
            init_image=None if status == "refused" else request.init_image,  # a refusal keeps no image
            seeds=request.seeds() if request.seed is not None else [], status=status, error=None,
            application_id=interaction.application_id if interaction else None,
            interaction_token=interaction.token if interaction else None,
            token_created_at=interaction.created_at if interaction else None,
            created_at=now, finished_at=now if status == "refused" else None, timings={},
            refusal=_refusal(refusal) if status == "refused" else None,
        )
        async with self._session() as session, session.begin():
            session.add(row)
        return _to_job(row)

    async def get_job(self, job_id: str) -> JobRecord | None:
        async with self._session() as session:
            row = await session.get(JobRow, job_id)
            return _to_job(row) if row is not None else None

    async def require_job(self, job_id: str) -> JobRecord:
        job = await self.get_job(job_id)
        if job is None:
            raise JobNotFound.not_stored(job_id)
        return job

    async def update_status(
        self,
        job_id: str,
        status: JobStatus,
        *,
        error: str | None = None,
        seeds: Sequence[int] | None = None,
        timings: dict[str, float] | None = None,
        refusal: str | None = None,
    ) -> JobRecord:
        """Move a job along its lifecycle (``TRANSITIONS``), stamping start/finish times. A move to
        ``refused`` records ``refusal``, the key of the limit that refused it.

        Raises ``IllegalTransition`` for a move the lifecycle forbids, including one that lost a race
        (the update only applies if the status is still the one that was checked).
        """
        now = self._clock()
        async with self._session() as session, session.begin():
            row = await session.get(JobRow, job_id, with_for_update=True)
            if row is None:
                raise JobNotFound.not_stored(job_id)
            return await _move(session, row, status, now, error=error, seeds=seeds, timings=timings,
                               refusal=refusal)

    async def set_messages(
        self, job_id: str, *, status_message_id: int | None = None, result_message_id: int | None = None
    ) -> JobRecord:
        """Record the status and/or result message of a job (``None`` leaves a value unchanged)."""
        values: dict[str, Any] = {key: value for key, value in
                                  (("status_message_id", status_message_id), ("result_message_id", result_message_id))
                                  if value is not None}
        return await self._update_job(job_id, values) if values else await self.require_job(job_id)

    # The outbox

    async def record_delivery(self, job_id: str, *, result_message_id: int | None = None) -> JobRecord:
        """Discord accepted the job's last message: nothing is owed any more."""
        values: dict[str, Any] = {"delivery": "delivered", "next_delivery_at": None}
        if result_message_id is not None:
            values["result_message_id"] = result_message_id
        return await self._update_job(job_id, values)

    async def delivery_failed(self, job_id: str, *, retry_at: datetime | None) -> JobRecord:
        """One more failed attempt; ``retry_at`` None gives up (the job becomes undeliverable)."""
        async with self._session() as session, session.begin():
            row = await session.get(JobRow, job_id, with_for_update=True)
            if row is None:
                raise JobNotFound.not_stored(job_id)
            row.delivery_attempts = (row.delivery_attempts or 0) + 1
            row.next_delivery_at = retry_at
            if retry_at is None:
                row.delivery = "undeliverable"
        return await self.require_job(job_id)

    async def owed_deliveries(self, now: datetime, limit: int = 50, *,
                              kinds: Iterable[JobKind] | None = None) -> list[JobRecord]:
        """Ended jobs whose last message Discord has not accepted yet and that are due a try, oldest first
        (``kinds``: only jobs of these kinds, for a feature that delivers its own)."""
        async with self._session() as session:
            rows = await session.scalars(
                select(JobRow).where(JobRow.delivery == "owed",
                                     (JobRow.next_delivery_at.is_(None)) | (JobRow.next_delivery_at <= now),
                                     *_of_kinds(kinds))
                .order_by(JobRow.finished_at, JobRow.id).limit(limit))
            return [_to_job(row) for row in rows]

    async def owed_count(self) -> int:
        """How many ended jobs still owe their last message (the outbox's backlog), counted by the database."""
        async with self._session() as session:
            return int(await session.scalar(select(func.count()).select_from(JobRow)
                                            .where(JobRow.delivery == "owed")) or 0)

    async def next_delivery_due(self, *, kinds: Iterable[JobKind] | None = None) -> datetime | None:
        """When the earliest owed delivery is due (None: nothing owed, or one is due now)."""
        async with self._session() as session:
            return await session.scalar(
                select(func.min(JobRow.next_delivery_at)).where(JobRow.delivery == "owed", *_of_kinds(kinds)))

    async def _update_job(self, job_id: str, values: dict[str, Any]) -> JobRecord:
        async with self._session() as session, session.begin():
            result = cast(CursorResult[Any], await session.execute(
                update(JobRow).where(JobRow.id == job_id).values(**values)))
            if result.rowcount != 1:
                raise JobNotFound.not_stored(job_id)
            return await _read_back(session, job_id)

    async def jobs_in_states(self, states: Iterable[JobStatus]) -> list[JobRecord]:
        """Jobs in any of ``states``, oldest first (for resuming after a restart)."""
        async with self._session() as session:
            rows = await session.scalars(
                select(JobRow).where(JobRow.status.in_(list(states))).order_by(JobRow.created_at, JobRow.id))
            return [_to_job(row) for row in rows]

    async def images_made_since(self, since: datetime) -> list[ImagesMade]:
        """Images made by jobs done since ``since``, summed per (guild, user) in the database (to rebuild
        daily quotas at start-up): three columns are read, never the rows' images."""
        async with self._session() as session:
            rows = await session.execute(
                select(JobRow.guild_id, JobRow.user_id, func.sum(images_of_job()))
                .where(JobRow.status == "done", JobRow.finished_at >= since)
                .group_by(JobRow.guild_id, JobRow.user_id).order_by(JobRow.guild_id, JobRow.user_id))
            return [ImagesMade(guild_id, user_id, int(total)) for guild_id, user_id, total in rows]

    async def requeue_interrupted(self) -> list[JobRecord]:
        """At start-up: put jobs cut off while ``running`` back to ``queued``; return every queued job.

        Each feature resumes its own jobs and calls this, so only the first call requeues: by a later one, the
        jobs running are this process's own (resumed by a feature that came first), not interrupted ones."""
        async with self._requeue_lock:
            if not self._requeued:
                for job in await self.jobs_in_states(["running"]):
                    await self.update_status(job.id, "queued")
                self._requeued = True
        return await self.jobs_in_states(["queued"])

    async def list_user_jobs(self, guild_id: int | None, user_id: int, limit: int = 10) -> list[JobRecord]:
        """A user's most recent jobs in a guild (``None``: DMs), newest first, without deleted ones."""
        guild_match = JobRow.guild_id.is_(None) if guild_id is None else JobRow.guild_id == guild_id
        async with self._session() as session:
            rows = await session.scalars(
                select(JobRow).where(guild_match, JobRow.user_id == user_id, JobRow.deleted_at.is_(None))
                .order_by(JobRow.created_at.desc(), JobRow.id).limit(limit))
            return [_to_job(row) for row in rows]

    async def mark_deleted(self, job_id: str) -> JobRecord:
        """Soft delete: keep the row for audit, drop its images, input image and interaction token, and
        the copies of its images that follow-ups (upscales, variations) hold as their input image."""
        async with self._session() as session, session.begin():
            row = await session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound.not_stored(job_id)
            paths = await self._delete_result_rows(session, job_id)
            row.deleted_at = row.deleted_at or self._clock()
            row.init_image, row.interaction_token = None, None
            await session.execute(update(JobRow).where(JobRow.parent_job_id == job_id, JobRow.init_image.is_not(None))
                                  .values(init_image=None))
        await asyncio.to_thread(images.remove_images, paths)
        return await self.require_job(job_id)

    async def delete_job(self, job_id: str) -> bool:
        """Hard delete: the row, its results and image files. False when there was no such job."""
        async with self._session() as session, session.begin():
            paths = await self._delete_result_rows(session, job_id)
            result = cast(CursorResult[Any], await session.execute(delete(JobRow).where(JobRow.id == job_id)))
        await asyncio.to_thread(images.remove_images, paths)
        return result.rowcount == 1

    # Retention

    async def purge(self, policy: RetentionPolicy, *, batch_size: int = retention.BATCH_SIZE) -> PurgeReport:
        """Remove what ``policy`` no longer keeps (see ``bot.storage.retention``), as of the storage clock."""
        return await retention.purge(self._session, self.data_dir, self._clock(), policy, batch_size)

    async def next_token_expiry(self, tokens_after: timedelta) -> datetime | None:
        """When the next stored interaction token falls due for clearing (None: no token is stored)."""
        return await retention.next_token_expiry(self._session, tokens_after)

    # Result images

    async def _delete_result_rows(self, session: AsyncSession, job_id: str) -> list[Path]:
        rows = (await session.scalars(select(ResultRow).where(ResultRow.job_id == job_id))).all()
        await session.execute(delete(ResultRow).where(ResultRow.job_id == job_id))
        return [self.data_dir / row.path for row in rows]

    def _to_result(self, row: ResultRow) -> ResultImage:
        return ResultImage(row.job_id, row.image_index, row.seed, self.data_dir / row.path, row.width, row.height,
                           row.size_bytes, row.nsfw)

    async def save_result_images(self, job_id: str, pngs: Sequence[bytes], seeds: Sequence[int],
                                 nsfw: Sequence[bool] = ()) -> list[ResultImage]:
        """Write each PNG to ``images/<job_id>_<i>.png`` (in a thread) and record it with the safety checker's flag
        (``nsfw``: one per image, or empty when they were not checked); replaces earlier results."""
        await self.require_job(job_id)
        rows = await self._write_result_files(job_id, pngs, seeds, nsfw)
        async with self._session() as session, session.begin():
            stale = await self._replace_result_rows(session, job_id, rows)
        await self._remove_leftovers(stale, rows)
        return [self._to_result(row) for row in rows]

    async def store_result(self, job_id: str, pngs: Sequence[bytes], seeds: Sequence[int], nsfw: Sequence[bool] = (),
                           *, timings: dict[str, float] | None = None) -> JobRecord:
        """``save_result_images``, then ``update_status(job_id, "done", seeds=seeds, timings=timings)``, in one
        commit: on the way from a finished batch to its upload, one transaction costs less than two.

        Where the job may not move to done (``IllegalTransition``: a cancel was stored first, or its "running"
        write was lost), the images are still stored and the error is raised after the commit, as the two calls
        one after the other would do."""
        rows = await self._write_result_files(job_id, pngs, seeds, nsfw)
        refused: IllegalTransition | None = None
        ended: JobRecord | None = None
        try:
            async with self._session() as session, session.begin():
                row = await session.get(JobRow, job_id, with_for_update=True)
                if row is None:
                    raise JobNotFound.not_stored(job_id)
                stale = await self._replace_result_rows(session, job_id, rows)
                try:
                    ended = await _move(session, row, "done", self._clock(), seeds=seeds, timings=timings)
                except IllegalTransition as exc:
                    refused = exc  # the images stay: commit them, then say why "done" was not stored
        except JobNotFound:
            await asyncio.to_thread(images.remove_images, [self.data_dir / row.path for row in rows])
            raise
        await self._remove_leftovers(stale, rows)
        if refused is not None:
            raise refused
        assert ended is not None
        return ended

    async def _write_result_files(self, job_id: str, pngs: Sequence[bytes], seeds: Sequence[int],
                                  nsfw: Sequence[bool]) -> list[ResultRow]:
        """Write the files (in a thread) and return the rows that record them, not yet added to any session."""
        if len(pngs) != len(seeds):
            raise ValueError(f"{len(pngs)} images but {len(seeds)} seeds")
        if nsfw and len(nsfw) != len(pngs):
            raise ValueError(f"{len(pngs)} images but {len(nsfw)} safety flags")
        flags: list[bool | None] = list(nsfw) if nsfw else [None] * len(pngs)
        relpaths = [images.image_relpath(job_id, index) for index in range(len(pngs))]
        sizes = await asyncio.to_thread(
            lambda: [images.write_image(self.data_dir, path, data) for path, data in zip(relpaths, pngs, strict=True)])
        now = self._clock()
        return [ResultRow(job_id=job_id, image_index=index, seed=seed, path=path, width=size[0], height=size[1],
                          size_bytes=len(data), created_at=now, nsfw=flag)
                for index, (seed, path, size, data, flag) in enumerate(zip(seeds, relpaths, sizes, pngs, flags,
                                                                           strict=True))]

    async def _replace_result_rows(self, session: AsyncSession, job_id: str, rows: list[ResultRow]) -> list[Path]:
        stale = await self._delete_result_rows(session, job_id)
        session.add_all(rows)
        return stale

    async def _remove_leftovers(self, stale: list[Path], rows: list[ResultRow]) -> None:
        kept = {Path(row.path).name for row in rows}
        leftover = [path for path in stale if path.name not in kept]
        if leftover:  # usually none: a first save replaces nothing, and a re-run writes the same names
            await asyncio.to_thread(images.remove_images, leftover)

    async def list_results(self, job_id: str) -> list[ResultImage]:
        async with self._session() as session:
            rows = await session.scalars(
                select(ResultRow).where(ResultRow.job_id == job_id).order_by(ResultRow.image_index))
            return [self._to_result(row) for row in rows]

    async def load_result_image(self, job_id: str, index: int) -> bytes | None:
        """The stored PNG of image ``index`` of a job, or ``None`` when it does not exist (any more)."""
        async with self._session() as session:
            row = await session.get(ResultRow, (job_id, index))
        if row is None:
            return None
        return await asyncio.to_thread(images.read_image, self.data_dir / row.path)

    async def find_job_by_message(self, message_id: int) -> JobRecord | None:
        """The job whose status or result message is ``message_id`` (what a message link names), if any.
        No index: moderators look a job up this way now and then, never on a request's path."""
        async with self._session() as session:
            shown_in = (JobRow.status_message_id == message_id) | (JobRow.result_message_id == message_id)
            row = await session.scalar(select(JobRow).where(shown_in).order_by(JobRow.created_at.desc()).limit(1))
            return _to_job(row) if row is not None else None

    async def record_cancel(self, job_id: str) -> None:
        """Store a person's cancel (the requester's ✖, a moderator's /mod cancel) right after the scheduler took
        it, before anyone is told "Cancelled.": a kill now must not bring the job back after a restart. When
        the scheduler's report was stored first, the job has already ended and there is nothing to do."""
        with contextlib.suppress(IllegalTransition):
            await self.update_status(job_id, "cancelled", error=CANCELLED_ERROR)

    # Guild settings

    async def all_guild_settings(self) -> dict[int, dict[str, Any]]:
        """Every server's stored settings (read once at start-up, before the features use the config)."""
        async with self._session() as session:
            rows = await session.scalars(select(GuildSettingsRow))
            return {row.guild_id: dict(row.overrides) for row in rows}

    async def get_guild_settings(self, guild_id: int) -> dict[str, Any]:
        async with self._session() as session:
            row = await session.get(GuildSettingsRow, guild_id)
            return dict(row.overrides) if row is not None else {}

    async def set_guild_settings(self, guild_id: int, overrides: dict[str, Any]) -> None:
        """Replace a guild's overrides (validate them first: storage keeps whatever it is given)."""
        async with self._session() as session, session.begin():
            row = await session.get(GuildSettingsRow, guild_id)
            if row is None:
                session.add(GuildSettingsRow(guild_id=guild_id, overrides=dict(overrides), updated_at=self._clock()))
            else:
                row.overrides, row.updated_at = dict(overrides), self._clock()
