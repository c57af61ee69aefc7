"""The bot's core, free of discord: store a job, admit it, resume it after a restart, cancel it.

Cogs translate Discord into these calls; ``bot.lifecycle.JobRecorder`` records what the scheduler
reports; ``bot.presenter`` shows it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.compose import Composed, resolve_model
from bot.config import ConfigStore
from bot.errors import NotPermitted
from bot.scheduler import Actor, Job, Scheduler
from bot.storage import InteractionRef, JobKind, Storage
from bot.storage import Job as StoredJob
from generation.errors import InvalidRequest
from generation.request import validate

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Requester:
    """Who asked, and where. ``guild_id`` 0 means a direct message."""

    user_id: int
    guild_id: int
    channel_id: int
    role_ids: frozenset[int] = frozenset()
    is_admin: bool = False

    @property
    def actor(self) -> Actor:
        return Actor(self.user_id, self.role_ids, self.is_admin)


class ImagineService:
    def __init__(self, config: ConfigStore, storage: Storage, scheduler: Scheduler) -> None:
        self.config = config
        self.storage = storage
        self.scheduler = scheduler

    async def submit(self, composed: Composed, requester: Requester, *, kind: JobKind = "imagine",
                     parent_job_id: str | None = None, interaction: InteractionRef | None = None) -> StoredJob:
        """Store the job, then admit it; a refusal is recorded and re-raised for the user to see."""
        self.scheduler.check_accepting()  # during shutdown storage closes soon: store nothing new
        stored = await self.storage.create_job(
            composed.request, user_id=requester.user_id, guild_id=requester.guild_id or None,
            channel_id=requester.channel_id, role_ids=requester.role_ids, kind=kind, parent_job_id=parent_job_id,
            interaction=interaction,
        )
        job = Job.create(stored.id, composed.request, user_id=requester.user_id, guild_id=requester.guild_id,
                         channel_id=requester.channel_id, role_ids=requester.role_ids,
                         cost_weight=composed.cost_weight)
        # A refusal raises here; the scheduler reports it to JobRecorder, which stores it (one writer
        # per transition: two writers raced into IllegalTransition and hid the refusal's message).
        self.scheduler.submit(job)
        return stored

    def may_moderate(self, requester: Requester) -> bool:
        return requester.is_admin or self.config.current.is_moderator(requester.guild_id, requester.role_ids)

    async def owned_job(self, job_id: str, requester: Requester, action: str) -> StoredJob:
        """The stored job if ``requester`` owns it or moderates its server; NotPermitted otherwise."""
        stored = await self.storage.require_job(job_id)
        moderates_its_server = (stored.guild_id or 0) == requester.guild_id and self.may_moderate(requester)
        if stored.user_id != requester.user_id and not moderates_its_server:
            raise NotPermitted(f"only the person who asked for this image or a moderator can {action} it")
        return stored

    def cancel(self, job_id: str, requester: Requester) -> None:
        self.scheduler.cancel(job_id, by=requester.actor)

    async def resume(self) -> tuple[list[StoredJob], list[tuple[StoredJob, str]]]:
        """Readmit jobs that were queued or running when the bot stopped.

        Returns (resumed, dropped with the reason); a job is dropped when today's config no longer
        allows it (its model was removed, its size now exceeds the limits).
        """
        # Daily quotas live in memory: count what was made in the last two days (any reset hour or
        # time zone falls inside) so that a restart does not hand everybody a fresh quota.
        since = datetime.now(UTC) - timedelta(days=2)
        for done in await self.storage.done_since(since):
            if done.finished_at is not None:
                self.scheduler.record_usage(done.guild_id or 0, done.user_id, frozenset(done.role_ids),
                                            len(done.seeds) or done.request.count, done.finished_at.timestamp())
        resumed: list[StoredJob] = []
        dropped: list[tuple[StoredJob, str]] = []
        config = self.config.current
        for stored in await self.storage.requeue_interrupted():
            if stored.status_message_id is None:
                # Stopped between storing and showing it: its owner saw only an error, so don't run it.
                reason = "it was never shown (the bot stopped before posting its status)"
                await self.storage.update_status(stored.id, "dropped", error=reason)
                dropped.append((stored, reason))
                continue
            try:
                name, model = resolve_model(config, stored.request.model)
                request = validate(stored.request, name, model)
            except InvalidRequest as exc:
                reason = f"It no longer fits this bot's settings: {exc}"
                await self.storage.update_status(stored.id, "dropped", error=reason)
                dropped.append((stored, reason))
                continue
            job = Job.create(stored.id, request, user_id=stored.user_id, guild_id=stored.guild_id or 0,
                             channel_id=stored.channel_id or 0, role_ids=frozenset(stored.role_ids),
                             cost_weight=model.cost_weight)
            self.scheduler.submit(job, readmit=True)
            resumed.append(stored)
        if resumed or dropped:
            _log.info("resumed %d job(s) after restart, dropped %d", len(resumed), len(dropped))
        return resumed, dropped
