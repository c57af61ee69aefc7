"""The SQL behind /stats and /me: aggregates over stored jobs, on SQLite and PostgreSQL alike.

Every query reads a few small columns (times, ids, the JSON seeds, count and timings) through a session from
``Storage.session()``; none selects the input-image blob or touches result files. Periods are given as aware
datetimes (quota-day starts from the scheduler) and compared with the stored UTC times; days are bucketed with
a CASE over those bounds, so a day is the server's quota day, DST changes included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from bot.storage import images_of_job
from bot.storage.models import JobRow


class seconds_between(FunctionElement[float]):  # lower case, as SQLAlchemy names SQL functions
    """``seconds_between(start, end)``: seconds from one timestamp column to another. Each database spells it
    differently: SQLite keeps times as text (``julianday`` reads it), PostgreSQL subtracts timestamps."""

    type = Float()
    inherit_cache = True
    name = "seconds_between"


@compiles(seconds_between, "sqlite")
def _seconds_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


@compiles(seconds_between)
def _seconds_postgresql(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"CAST(EXTRACT(EPOCH FROM ({end} - {start})) AS DOUBLE PRECISION)"


def _where(guild_id: int | None, user_id: int | None = None) -> list[ColumnElement[bool]]:
    """Jobs of a guild (None: direct messages), and of one user there when given."""
    where = [JobRow.guild_id.is_(None) if guild_id is None else JobRow.guild_id == guild_id]
    if user_id is not None:
        where.append(JobRow.user_id == user_id)
    return where


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


async def images_per_day(session: AsyncSession, guild_id: int | None, day_starts: Sequence[datetime], *,
                         user_id: int | None = None) -> list[int]:
    """Images made on each day that starts at ``day_starts`` (the last runs until now), by when jobs finished."""
    bounds = [_utc(start) for start in day_starts]
    day = case(*((JobRow.finished_at < bound, index) for index, bound in enumerate(bounds[1:])),
               else_=len(bounds) - 1).label("day")
    # Bucket in a subquery, group outside it: PostgreSQL would not match a grouped CASE to the selected one
    # (each carries its own bound parameters).
    made = (select(day, images_of_job().label("images"))
            .where(*_where(guild_id, user_id), JobRow.status == "done", JobRow.finished_at >= bounds[0])
            .subquery())
    counts = [0] * len(bounds)
    for index, images in await session.execute(
            select(made.c.day, func.sum(made.c.images)).group_by(made.c.day)):
        counts[int(index)] = int(images)
    return counts


async def images_made(session: AsyncSession, guild_id: int | None, *, user_id: int | None = None) -> int:
    """Images made in total (as long as job records are kept: ``retention.jobs_days``)."""
    total = await session.scalar(select(func.sum(images_of_job()))
                                 .where(*_where(guild_id, user_id), JobRow.status == "done"))
    return int(total or 0)


async def top_users(session: AsyncSession, guild_id: int, since: datetime, limit: int) -> list[tuple[int, int]]:
    """(user id, images) of the users who made the most images since ``since``; ties by user id."""
    images = func.sum(images_of_job())
    rows = await session.execute(
        select(JobRow.user_id, images)
        .where(*_where(guild_id), JobRow.status == "done", JobRow.finished_at >= _utc(since))
        .group_by(JobRow.user_id).order_by(images.desc(), JobRow.user_id).limit(limit))
    return [(int(user_id), int(total)) for user_id, total in rows]


@dataclass(frozen=True)
class Waits:
    jobs: int  # jobs that started in the period
    median_s: float
    p90_s: float


async def waits(session: AsyncSession, guild_id: int, since: datetime) -> Waits | None:
    """Median and 90th percentile of the wait from a request to its start, for jobs that started since
    ``since`` (nearest rank: the value at rank ceil(p x n), so each figure is a wait some job really had)."""
    wait = seconds_between(JobRow.created_at, JobRow.started_at)
    where = [*_where(guild_id), JobRow.started_at.is_not(None), JobRow.started_at >= _utc(since)]
    count = int(await session.scalar(select(func.count()).select_from(JobRow).where(*where)) or 0)
    if count == 0:
        return None

    async def at_rank(fraction: float) -> float:
        rank = max(1, math.ceil(fraction * count))
        value = await session.scalar(select(wait).where(*where).order_by(wait, JobRow.id).offset(rank - 1).limit(1))
        return max(0.0, float(value or 0.0))

    return Waits(count, await at_rank(0.5), await at_rank(0.9))


async def gpu_seconds(session: AsyncSession, guild_id: int, since: datetime | None = None) -> float:
    """Seconds the executor spent on jobs that made images (load, denoise and decode, from their stored
    timings); a batch's time counts for each of its jobs."""
    load, denoise, decode = (func.coalesce(JobRow.timings[key].as_float(), 0.0)
                             for key in ("load_s", "denoise_s", "decode_s"))
    spent = load + denoise + decode
    where = [*_where(guild_id), JobRow.status == "done"]
    if since is not None:
        where.append(JobRow.finished_at >= _utc(since))
    return float(await session.scalar(select(func.sum(spent)).where(*where)) or 0.0)


async def refusals(session: AsyncSession, guild_id: int, since: datetime) -> list[tuple[str | None, int]]:
    """(the key of the limit that refused, how many) for requests refused since ``since``, most first, then by
    key. The key is None for refusals stored before it was recorded; those come last."""
    rows = await session.execute(
        select(JobRow.refusal, func.count())
        .where(*_where(guild_id), JobRow.status == "refused", JobRow.finished_at >= _utc(since))
        .group_by(JobRow.refusal))
    # Sorted here: SQLite and PostgreSQL put NULL at opposite ends, and there are only a few reasons.
    return sorted(((reason, int(count)) for reason, count in rows),
                  key=lambda row: (-row[1], row[0] is None, row[0] or ""))


@dataclass(frozen=True)
class Made:
    """One of a member's finished requests, with where its result was posted."""

    job_id: str
    finished_at: datetime
    prompt: str
    images: int
    channel_id: int | None
    message_id: int | None


async def last_made(session: AsyncSession, guild_id: int | None, user_id: int, limit: int) -> list[Made]:
    """A member's latest requests that made images and were not deleted, newest first."""
    rows = await session.execute(
        select(JobRow.id, JobRow.finished_at, JobRow.request["prompt"].as_string(), images_of_job(),
               JobRow.channel_id, JobRow.result_message_id)
        .where(*_where(guild_id, user_id), JobRow.status == "done", JobRow.deleted_at.is_(None))
        .order_by(JobRow.finished_at.desc(), JobRow.id).limit(limit))
    return [Made(job_id, finished_at, prompt or "", int(images), channel_id, message_id)
            for job_id, finished_at, prompt, images, channel_id, message_id in rows]
