"""The retention purge: what is older than the configured ages goes, in small batches.

- interaction tokens (credentials that edit a job's message) are cleared once Discord has expired them;
- result PNGs (files) and input images (the ``init_image`` blob) are removed after ``images_after``;
  the job row stays, so history, quotas and "no longer available" answers still work;
- job rows (with anything they still hold) are deleted after ``jobs_after``.

Queued and running jobs are never touched. Each batch is its own short transaction through the async
engine, and files are removed in a worker thread *before* their rows: a crash in between leaves rows
whose files are already gone, which the next purge finishes (nothing is ever left without a row).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Select, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.storage import images
from bot.storage.models import JobRow, ResultRow
from bot.storage.records import ACTIVE_STATUSES

_log = logging.getLogger(__name__)
BATCH_SIZE = 500  # rows per transaction: short write locks, bounded memory


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of data is kept; ``None`` keeps it for good."""

    images_after: timedelta | None
    jobs_after: timedelta | None
    tokens_after: timedelta


@dataclass(frozen=True)
class PurgeReport:
    """What one purge removed."""

    result_images: int = 0  # PNG files (and their rows)
    input_images: int = 0  # init_image blobs cleared
    tokens: int = 0  # interaction tokens cleared
    jobs: int = 0  # job rows deleted

    def __bool__(self) -> bool:
        return any((self.result_images, self.input_images, self.tokens, self.jobs))


Sessions = Callable[[], AsyncSession]
_INACTIVE = JobRow.status.not_in(ACTIVE_STATUSES)


async def purge(sessions: Sessions, data_dir: Path, now: datetime, policy: RetentionPolicy,
                batch_size: int = BATCH_SIZE) -> PurgeReport:
    tokens = await _clear_in_batches(
        sessions, select(JobRow.id).where(JobRow.interaction_token.is_not(None),
                                          JobRow.token_created_at < now - policy.tokens_after),
        {"interaction_token": None}, batch_size)
    result_images = input_images = jobs = 0
    if policy.images_after is not None:
        cutoff = now - policy.images_after
        result_images = await _remove_result_images(sessions, data_dir, cutoff, batch_size)
        input_images = await _clear_in_batches(
            sessions, select(JobRow.id).where(JobRow.init_image.is_not(None), JobRow.created_at < cutoff, _INACTIVE),
            {"init_image": None}, batch_size)
    if policy.jobs_after is not None:
        jobs = await _delete_jobs(sessions, data_dir, now - policy.jobs_after, batch_size)
    return PurgeReport(result_images=result_images, input_images=input_images, tokens=tokens, jobs=jobs)


async def _clear_in_batches(sessions: Sessions, ids: Select[Any], values: dict[str, Any],
                            batch_size: int) -> int:
    """Set ``values`` on the rows ``ids`` selects, ``batch_size`` rows per transaction."""
    cleared = 0
    while True:
        async with sessions() as session, session.begin():
            batch = list(await session.scalars(ids.limit(batch_size)))
            if batch:
                result = cast(CursorResult[Any], await session.execute(
                    update(JobRow).where(JobRow.id.in_(batch)).values(**values)))
                cleared += result.rowcount
        if len(batch) < batch_size:
            return cleared


async def _remove_result_images(sessions: Sessions, data_dir: Path, cutoff: datetime, batch_size: int) -> int:
    removed = 0
    while True:
        async with sessions() as session:
            job_ids = list(await session.scalars(
                select(ResultRow.job_id).where(ResultRow.created_at < cutoff).distinct().limit(batch_size)))
            rows = (await session.execute(
                select(ResultRow.path).where(ResultRow.job_id.in_(job_ids), ResultRow.created_at < cutoff))).all()
        if not job_ids:
            return removed
        await asyncio.to_thread(images.remove_images, [data_dir / row.path for row in rows])
        async with sessions() as session, session.begin():
            await session.execute(delete(ResultRow).where(ResultRow.job_id.in_(job_ids),
                                                          ResultRow.created_at < cutoff))
        removed += len(rows)
        if len(job_ids) < batch_size:
            return removed


async def _delete_jobs(sessions: Sessions, data_dir: Path, cutoff: datetime, batch_size: int) -> int:
    deleted = 0
    while True:
        async with sessions() as session:
            job_ids = list(await session.scalars(
                select(JobRow.id).where(JobRow.created_at < cutoff, _INACTIVE).limit(batch_size)))
            paths = list(await session.scalars(select(ResultRow.path).where(ResultRow.job_id.in_(job_ids))))
        if not job_ids:
            return deleted
        if paths:  # images kept longer than their jobs go with them
            await asyncio.to_thread(images.remove_images, [data_dir / path for path in paths])
        async with sessions() as session, session.begin():
            await session.execute(delete(ResultRow).where(ResultRow.job_id.in_(job_ids)))
            result = cast(CursorResult[Any], await session.execute(
                delete(JobRow).where(JobRow.id.in_(job_ids), _INACTIVE)))
        deleted += result.rowcount
        if len(job_ids) < batch_size:
            return deleted


async def next_token_expiry(sessions: Sessions, tokens_after: timedelta) -> datetime | None:
    """When the oldest interaction token still stored is due to be cleared (None: none is stored)."""
    async with sessions() as session:
        oldest = await session.scalar(
            select(JobRow.token_created_at)
            .where(JobRow.interaction_token.is_not(None), JobRow.token_created_at.is_not(None))
            .order_by(JobRow.token_created_at).limit(1))
    return None if oldest is None else oldest + tokens_after
