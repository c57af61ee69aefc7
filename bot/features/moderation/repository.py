"""What the moderation feature stores: servers' settings with the audit entry of each change (one
transaction, so a change is never stored without its entry, nor an entry without its change), paused
servers, and the audit log itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.features.moderation.tables import audit_table, pauses_table
from bot.storage import Storage
from bot.storage.models import GuildSettingsRow


@dataclass(frozen=True)
class AuditEntry:
    """One change: who (id and name then), where, what (``command`` and its ``target``), before → after."""

    guild_id: int
    actor_id: int
    actor_name: str
    command: str
    target: str
    before: Any = None
    after: Any = None
    subject_id: int | None = None  # the member acted on, if any
    created_at: datetime | None = None  # set when stored


class ModerationStore:
    def __init__(self, storage: Storage, now: Callable[[], datetime]) -> None:
        self._storage = storage
        self._now = now

    async def _log(self, session: AsyncSession, entry: AuditEntry) -> None:
        await session.execute(insert(audit_table).values(
            guild_id=entry.guild_id, actor_id=entry.actor_id, actor_name=entry.actor_name[:100],
            command=entry.command, target=entry.target[:200], subject_id=entry.subject_id, before=entry.before,
            after=entry.after, created_at=self._now()))

    async def save_settings(self, guild_id: int, overrides: dict[str, Any], entry: AuditEntry) -> None:
        """Replace a server's stored settings and log the change, together."""
        async with self._storage.session() as session, session.begin():
            row = await session.get(GuildSettingsRow, guild_id, with_for_update=True)
            if row is None:
                session.add(GuildSettingsRow(guild_id=guild_id, overrides=overrides, updated_at=self._now()))
            else:
                row.overrides, row.updated_at = overrides, self._now()
            await self._log(session, entry)

    async def record(self, entry: AuditEntry) -> None:
        """Log a change that is not a setting (a cancel, a purge, a reload)."""
        async with self._storage.session() as session, session.begin():
            await self._log(session, entry)

    async def set_paused(self, guild_id: int, paused: bool, entry: AuditEntry) -> None:
        async with self._storage.session() as session, session.begin():
            await session.execute(delete(pauses_table).where(pauses_table.c.guild_id == guild_id))
            if paused:
                await session.execute(insert(pauses_table).values(guild_id=guild_id, paused_by=entry.actor_id,
                                                                  paused_at=self._now()))
            await self._log(session, entry)

    async def paused_guilds(self) -> list[int]:
        async with self._storage.session() as session:
            return list(await session.scalars(select(pauses_table.c.guild_id).order_by(pauses_table.c.guild_id)))

    async def audit(self, guild_id: int, *, user_id: int | None = None, limit: int = 10) -> list[AuditEntry]:
        """A server's log, newest first; with ``user_id``, the changes made by that member or about them."""
        table = audit_table.c
        query = select(audit_table).where(table.guild_id == guild_id)
        if user_id is not None:
            query = query.where(or_(table.actor_id == user_id, table.subject_id == user_id))
        async with self._storage.session() as session:
            rows = await session.execute(query.order_by(table.id.desc()).limit(limit))
            return [AuditEntry(guild_id=row.guild_id, actor_id=row.actor_id, actor_name=row.actor_name,
                               command=row.command, target=row.target, before=row.before, after=row.after,
                               subject_id=row.subject_id, created_at=row.created_at) for row in rows]
