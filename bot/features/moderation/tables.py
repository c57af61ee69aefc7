"""The moderation feature's tables (created by migration 6 in ``bot/storage/migrations.py``).

Core ``Table``s on the shared ``Base.metadata`` rather than declarative classes: discord.py imports an
extension's modules again each time it is loaded (a restart in one process, a reload), and a declarative
class declared twice on one base is an error; a table already on the metadata is simply taken again.

Servers' stored settings live in the shared ``guild_settings`` table (``bot.storage.models``), which the
config store reads at start-up; bans are among those settings (``banned_users``), so that admission reads
them from the config like the channel allow-list.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, String, Table
from sqlalchemy.schema import SchemaItem

from bot.storage.models import Base, UTCDateTime


def _table(name: str, *items: SchemaItem) -> Table:
    """The table ``name`` on ``Base.metadata``: declared by the first import, the same object after that."""
    existing = Base.metadata.tables.get(name)
    return existing if existing is not None else Table(name, Base.metadata, *items)


# One change a moderator made: who, when, in which server, what (command and target), before → after.
audit_table = _table(
    "moderation_audit",
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("guild_id", BigInteger, nullable=False),
    Column("actor_id", BigInteger, nullable=False),
    Column("actor_name", String(100), nullable=False),  # as it was then: names change, the log should not
    Column("command", String(64), nullable=False),  # e.g. "limits set"
    Column("target", String(200), nullable=False),  # e.g. "max_queued_per_user", a channel, a rule id, a job id
    Column("subject_id", BigInteger),  # the member acted on (ban, purge, the owner of a cancelled job)
    Column("before", JSON),
    Column("after", JSON),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_moderation_audit_guild", "guild_id", "id"),  # a server's log, newest first
)

# A server whose queue a moderator paused (/mod pause); the row goes on /mod resume.
pauses_table = _table(
    "moderation_pauses",
    Column("guild_id", BigInteger, primary_key=True, autoincrement=False),
    Column("paused_by", BigInteger, nullable=False),
    Column("paused_at", UTCDateTime, nullable=False),
)
