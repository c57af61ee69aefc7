"""The contests feature's tables (schema v8; ``bot/storage/migrations.py`` creates them with its own DDL, and
``tests/test_storage_migrations.py`` checks the two agree).

They are declared on a declarative base of this module's own, with the shared base's column types (aware UTC
times, JSON): discord.py executes an extension's modules afresh each time it loads the extension (a restarted
bot in one process, a reload), and the same classes declared twice on the shared ``Base`` would clash there.

A round's state lives here and nowhere else: its phase and deadlines (the phase loop reads what is due
from ``contests``), what members entered (``contest_entries``, each with a copy of its image so the purge of
old results never empties a gallery), who voted for what (``contest_votes``, one row per member per round),
the tally (``contest_placings``, written with the phase change to ``closed``), the messages a round owes its
channel (``contest_posts``, an outbox: owed, then posted and recorded) and what moderators did
(``contest_audit``). ``contest_jobs`` maps each generation job to its round: the job-event listener ignores
every job it does not find there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bot.storage.models import Base, StoredText


class ContestBase(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = dict(Base.type_annotation_map)


class ContestRow(ContestBase):
    __tablename__ = "contests"
    __table_args__ = (
        Index("ix_contests_guild_number", "guild_id", "number", unique=True),
        Index("ix_contests_phase", "phase"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    number: Mapped[int] = mapped_column(Integer)  # what members call it: contest #3 of this server
    channel_id: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[int] = mapped_column(BigInteger)
    theme: Mapped[str] = mapped_column(StoredText)
    rules: Mapped[dict[str, Any]]  # model, steps, width, height, seed (set: a same-seed round)
    max_entries: Mapped[int] = mapped_column(Integer)
    blind: Mapped[bool]
    joined_before_voting: Mapped[bool]
    prize: Mapped[str | None] = mapped_column(StoredText)
    phase: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    submit_ends_at: Mapped[datetime]
    vote_ends_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    gallery_channel_id: Mapped[int | None] = mapped_column(BigInteger)  # the gallery thread, or the channel


class EntryRow(ContestBase):
    __tablename__ = "contest_entries"
    __table_args__ = (Index("ix_contest_entries_contest", "contest_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    contest_id: Mapped[str] = mapped_column(String(32), ForeignKey("contests.id"))
    user_id: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[str] = mapped_column(String(32))  # no FK: the retention purge may delete the job row first
    image_index: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(StoredText)
    seed: Mapped[int] = mapped_column(BigInteger)
    number: Mapped[int | None] = mapped_column(Integer)  # its place in the gallery, drawn when voting opens
    submitted_at: Mapped[datetime]
    withdrawn_at: Mapped[datetime | None]
    disqualified_at: Mapped[datetime | None]


class EntryImageRow(ContestBase):
    __tablename__ = "contest_entry_images"

    entry_id: Mapped[str] = mapped_column(String(32), ForeignKey("contest_entries.id"), primary_key=True)
    png: Mapped[bytes] = mapped_column(LargeBinary)


class ContestJobRow(ContestBase):
    __tablename__ = "contest_jobs"
    __table_args__ = (Index("ix_contest_jobs_contest", "contest_id", "user_id"),)

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    contest_id: Mapped[str] = mapped_column(String(32), ForeignKey("contests.id"))
    user_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class VoteRow(ContestBase):
    __tablename__ = "contest_votes"

    contest_id: Mapped[str] = mapped_column(String(32), ForeignKey("contests.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    entry_id: Mapped[str] = mapped_column(String(32))
    voted_at: Mapped[datetime]


class PlacingRow(ContestBase):
    __tablename__ = "contest_placings"

    contest_id: Mapped[str] = mapped_column(String(32), ForeignKey("contests.id"), primary_key=True)
    entry_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    rank: Mapped[int] = mapped_column(Integer)  # 1.. in the tally's order, tie-break applied
    votes: Mapped[int] = mapped_column(Integer)
    place: Mapped[int | None] = mapped_column(Integer)  # 1-3 on the podium, else None
    points: Mapped[int] = mapped_column(Integer)


class PostRow(ContestBase):
    __tablename__ = "contest_posts"
    __table_args__ = (Index("ix_contest_posts_state", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # its first 25 characters: the message nonce
    contest_id: Mapped[str] = mapped_column(String(32), ForeignKey("contests.id"))
    seq: Mapped[int] = mapped_column(Integer)  # posts of a round go out in this order
    kind: Mapped[str] = mapped_column(String(16))
    entry_id: Mapped[str | None] = mapped_column(String(32))
    part: Mapped[int] = mapped_column(Integer)  # which part of a text that needs several messages
    state: Mapped[str] = mapped_column(String(16))  # owed, posted, failed
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class AuditRow(ContestBase):
    __tablename__ = "contest_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    contest_id: Mapped[str] = mapped_column(String(32), ForeignKey("contests.id"))
    guild_id: Mapped[int] = mapped_column(BigInteger)
    actor_id: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(16))  # start, cancel, disqualify
    entry_number: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(StoredText)
    at: Mapped[datetime]
