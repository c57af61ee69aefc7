"""ORM tables: the latest schema. Migrations (``migrations.py``) build the same schema step by step.

Keep this file and the latest migration in step; ``tests/test_storage_migrations.py`` compares them.
Snowflakes are BigInteger; JSON columns hold request fields, seeds, role ids and timings; times are
timezone-aware UTC (``UTCDateTime``), so SQLite and PostgreSQL behave the same. Free text
(``StoredText``) turns NUL characters, which PostgreSQL's text cannot hold, into U+FFFD on both.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to storage; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class StoredText(TypeDecorator[str]):
    """Text with NUL characters replaced by U+FFFD: PostgreSQL refuses NUL in text, SQLite would keep it."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return value.replace("\x00", "\ufffd") if value is not None else None


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[int]: JSON, datetime: UTCDateTime}


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_owner", "guild_id", "user_id", "created_at"),
        Index("ix_jobs_delivery", "delivery"),
        # schema v4: the retention purge (partial indexes hold only jobs that still hold an image or token)
        Index("ix_jobs_created", "created_at"),
        Index("ix_jobs_parent", "parent_job_id"),
        Index("ix_jobs_held_images", "created_at", sqlite_where=text("init_image IS NOT NULL"),
              postgresql_where=text("init_image IS NOT NULL")),
        Index("ix_jobs_live_tokens", "token_created_at", sqlite_where=text("interaction_token IS NOT NULL"),
              postgresql_where=text("interaction_token IS NOT NULL")),
        # schema v5: usage figures per server and period (/stats, /me) read jobs by guild and end time
        Index("ix_jobs_guild_finished", "guild_id", "finished_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    parent_job_id: Mapped[str | None] = mapped_column(String(32))  # no FK: a parent may be purged first
    guild_id: Mapped[int | None] = mapped_column(BigInteger)  # None in DMs
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    role_ids: Mapped[list[int]]
    request: Mapped[dict[str, Any]]  # every GenerationRequest field but init_image
    init_image: Mapped[bytes | None] = mapped_column(LargeBinary)  # input image, raw bytes (loaded with the row)
    seeds: Mapped[list[int]]
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(StoredText)  # may quote what a user typed
    application_id: Mapped[int | None] = mapped_column(BigInteger)
    interaction_token: Mapped[str | None] = mapped_column(StoredText)
    token_created_at: Mapped[datetime | None]
    status_message_id: Mapped[int | None] = mapped_column(BigInteger)
    result_message_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    timings: Mapped[dict[str, Any]]
    deleted_at: Mapped[datetime | None]  # schema v2: soft delete (images removed, row kept for audit)
    # schema v3, the outbox: owed once the job ended, delivered once Discord accepted its last message
    delivery: Mapped[str | None] = mapped_column(String(16))
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_delivery_at: Mapped[datetime | None]
    # schema v5: what refused a refused job (the limit's key, e.g. limits.daily_images_per_user), for usage
    # figures; the error text is for people and may change wording
    refusal: Mapped[str | None] = mapped_column(String(64))


class ResultRow(Base):
    __tablename__ = "results"
    __table_args__ = (Index("ix_results_created", "created_at"),)  # schema v4: the retention purge

    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    image_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    seed: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(255))  # relative to the data dir: images/<job_id>_<i>.png
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    nsfw: Mapped[bool | None] = mapped_column(Boolean)  # schema v7: the safety checker's flag (None: not checked)


class GuildSettingsRow(Base):
    """Schema v2: per-guild overrides set by moderators (validated by the bot's config layer)."""

    __tablename__ = "guild_settings"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    overrides: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]
