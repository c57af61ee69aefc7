"""Versioned schema migrations: a ``schema_version`` table and an ordered list of steps.

Each step is a function of a sync ``Connection`` that builds on the schema before it. Steps define
their own tables (never from ``models.py``, which is the *latest* schema), so an old database
always upgrades through the same DDL. ``migrate`` runs the pending steps and records each in
``schema_version`` inside the caller's transaction (SQLite and PostgreSQL both have transactional
DDL), so a failed upgrade leaves the database as it was, and running it again is a no-op.

Two processes starting at once on one database migrate it once: ``migrate`` first takes the
migration lock for the rest of the caller's transaction (PostgreSQL: ``pg_advisory_xact_lock``;
SQLite: the write lock that ``db.make_engine`` takes with ``BEGIN IMMEDIATE``), so the second waits,
then finds the schema current and applies nothing.

To change the schema: append ``Migration(N + 1, ...)`` here and update ``models.py`` to match.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    inspect,
    select,
    text,
)

from bot.core.errors import StorageError
from bot.storage.db import SQLITE_WRITE_LOCKED

_log = logging.getLogger(__name__)

# The PostgreSQL advisory lock key that serializes migrations: "imagine" in ASCII, as a bigint.
MIGRATION_LOCK_ID = int.from_bytes(b"imagine", "big")


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _schema_version_table(metadata: MetaData) -> Table:
    return Table(
        "schema_version", metadata,
        Column("version", Integer, primary_key=True),
        Column("description", String(200), nullable=False),
        Column("applied_at", DateTime(timezone=True), nullable=False),
    )


def _v1_jobs_and_results(conn: Connection) -> None:
    metadata = MetaData()
    Table(
        "jobs", metadata,
        Column("id", String(32), primary_key=True),
        Column("kind", String(16), nullable=False),
        Column("parent_job_id", String(32)),
        Column("guild_id", BigInteger),
        Column("channel_id", BigInteger),
        Column("user_id", BigInteger, nullable=False),
        Column("role_ids", JSON, nullable=False),
        Column("request", JSON, nullable=False),
        Column("init_image", LargeBinary),
        Column("seeds", JSON, nullable=False),
        Column("status", String(16), nullable=False),
        Column("error", Text),
        Column("application_id", BigInteger),
        Column("interaction_token", Text),
        Column("token_created_at", DateTime(timezone=True)),
        Column("status_message_id", BigInteger),
        Column("result_message_id", BigInteger),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("started_at", DateTime(timezone=True)),
        Column("finished_at", DateTime(timezone=True)),
        Column("timings", JSON, nullable=False),
    )
    Table(
        "results", metadata,
        Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        Column("image_index", Integer, primary_key=True),
        Column("seed", BigInteger, nullable=False),
        Column("path", String(255), nullable=False),
        Column("width", Integer, nullable=False),
        Column("height", Integer, nullable=False),
        Column("size_bytes", Integer, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )
    metadata.create_all(conn)


def _add_column(conn: Connection, table: str, column: Column[object]) -> None:
    quote = conn.dialect.identifier_preparer.quote
    type_sql = column.type.compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column.name)} {type_sql}"))


def _v2_soft_delete_guild_settings_indexes(conn: Connection) -> None:
    _add_column(conn, "jobs", Column("deleted_at", DateTime(timezone=True)))
    conn.execute(text("CREATE INDEX ix_jobs_status ON jobs (status)"))
    conn.execute(text("CREATE INDEX ix_jobs_owner ON jobs (guild_id, user_id, created_at)"))
    metadata = MetaData()
    Table(
        "guild_settings", metadata,
        Column("guild_id", BigInteger, primary_key=True, autoincrement=False),
        Column("overrides", JSON, nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    metadata.create_all(conn)


def _v3_delivery_outbox(conn: Connection) -> None:
    _add_column(conn, "jobs", Column("delivery", String(16)))
    quote = conn.dialect.identifier_preparer.quote
    conn.execute(text(f"ALTER TABLE jobs ADD COLUMN {quote('delivery_attempts')} INTEGER NOT NULL DEFAULT 0"))
    _add_column(conn, "jobs", Column("next_delivery_at", DateTime(timezone=True)))
    # Jobs that ended before the outbox existed were shown then (or never will be): nothing is owed.
    conn.execute(text("UPDATE jobs SET delivery = 'delivered' WHERE status NOT IN ('queued', 'running')"))
    conn.execute(text("CREATE INDEX ix_jobs_delivery ON jobs (delivery)"))


def _v4_retention_indexes(conn: Connection) -> None:
    # The retention purge and deletes look jobs up by age, by parent, and by what they still hold;
    # the partial indexes stay as small as the data still held (SQLite and PostgreSQL both have them).
    conn.execute(text("CREATE INDEX ix_jobs_created ON jobs (created_at)"))
    conn.execute(text("CREATE INDEX ix_jobs_parent ON jobs (parent_job_id)"))
    conn.execute(text("CREATE INDEX ix_jobs_held_images ON jobs (created_at) WHERE init_image IS NOT NULL"))
    conn.execute(text("CREATE INDEX ix_jobs_live_tokens ON jobs (token_created_at) "
                      "WHERE interaction_token IS NOT NULL"))
    conn.execute(text("CREATE INDEX ix_results_created ON results (created_at)"))


def _v5_refusal_reason_and_usage_index(conn: Connection) -> None:
    # Refusals stored before this step keep a null reason.
    _add_column(conn, "jobs", Column("refusal", String(64)))
    conn.execute(text("CREATE INDEX ix_jobs_guild_finished ON jobs (guild_id, finished_at)"))


def _v6_moderation(conn: Connection) -> None:
    # The moderation feature's tables (bot/features/moderation/tables.py): who changed what, and which servers'
    # queues a moderator paused. Its stored settings use guild_settings (v2), and bans are among them.
    metadata = MetaData()
    Table(
        "moderation_audit", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("guild_id", BigInteger, nullable=False),
        Column("actor_id", BigInteger, nullable=False),
        Column("actor_name", String(100), nullable=False),
        Column("command", String(64), nullable=False),
        Column("target", String(200), nullable=False),
        Column("subject_id", BigInteger),
        Column("before", JSON),
        Column("after", JSON),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Index("ix_moderation_audit_guild", "guild_id", "id"),
    )
    Table(
        "moderation_pauses", metadata,
        Column("guild_id", BigInteger, primary_key=True, autoincrement=False),
        Column("paused_by", BigInteger, nullable=False),
        Column("paused_at", DateTime(timezone=True), nullable=False),
    )
    metadata.create_all(conn)


def _v7_result_safety_flags(conn: Connection) -> None:
    # The safety checker's verdict per image: true flagged, false passed, null never checked (made before this, or
    # where no safety mode asked). Stored so that a re-post after a restart and the U/V buttons apply the policy.
    _add_column(conn, "results", Column("nsfw", Boolean))


def _v8_prompt_contests(conn: Connection) -> None:
    # The tables of bot.features.contests (its tables.py holds the ORM side).
    metadata = MetaData()
    Table(
        "contests", metadata,
        Column("id", String(32), primary_key=True),
        Column("guild_id", BigInteger, nullable=False),
        Column("number", Integer, nullable=False),
        Column("channel_id", BigInteger, nullable=False),
        Column("created_by", BigInteger, nullable=False),
        Column("theme", Text, nullable=False),
        Column("rules", JSON, nullable=False),
        Column("max_entries", Integer, nullable=False),
        Column("blind", Boolean, nullable=False),
        Column("joined_before_voting", Boolean, nullable=False),
        Column("prize", Text),
        Column("phase", String(16), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("submit_ends_at", DateTime(timezone=True), nullable=False),
        Column("vote_ends_at", DateTime(timezone=True), nullable=False),
        Column("ended_at", DateTime(timezone=True)),
        Column("gallery_channel_id", BigInteger),
        Index("ix_contests_guild_number", "guild_id", "number", unique=True),
        Index("ix_contests_phase", "phase"),
    )
    Table(
        "contest_entries", metadata,
        Column("id", String(32), primary_key=True),
        Column("contest_id", String(32), ForeignKey("contests.id"), nullable=False),
        Column("user_id", BigInteger, nullable=False),
        Column("job_id", String(32), nullable=False),
        Column("image_index", Integer, nullable=False),
        Column("prompt", Text, nullable=False),
        Column("seed", BigInteger, nullable=False),
        Column("number", Integer),
        Column("submitted_at", DateTime(timezone=True), nullable=False),
        Column("withdrawn_at", DateTime(timezone=True)),
        Column("disqualified_at", DateTime(timezone=True)),
        Index("ix_contest_entries_contest", "contest_id", "user_id"),
    )
    Table(
        "contest_entry_images", metadata,
        Column("entry_id", String(32), ForeignKey("contest_entries.id"), primary_key=True),
        Column("png", LargeBinary, nullable=False),
    )
    Table(
        "contest_jobs", metadata,
        Column("job_id", String(32), primary_key=True),
        Column("contest_id", String(32), ForeignKey("contests.id"), nullable=False),
        Column("user_id", BigInteger, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Index("ix_contest_jobs_contest", "contest_id", "user_id"),
    )
    Table(
        "contest_votes", metadata,
        Column("contest_id", String(32), ForeignKey("contests.id"), primary_key=True),
        Column("user_id", BigInteger, primary_key=True, autoincrement=False),
        Column("entry_id", String(32), nullable=False),
        Column("voted_at", DateTime(timezone=True), nullable=False),
    )
    Table(
        "contest_placings", metadata,
        Column("contest_id", String(32), ForeignKey("contests.id"), primary_key=True),
        Column("entry_id", String(32), primary_key=True),
        Column("user_id", BigInteger, nullable=False),
        Column("rank", Integer, nullable=False),
        Column("votes", Integer, nullable=False),
        Column("place", Integer),
        Column("points", Integer, nullable=False),
    )
    Table(
        "contest_posts", metadata,
        Column("id", String(32), primary_key=True),
        Column("contest_id", String(32), ForeignKey("contests.id"), nullable=False),
        Column("seq", Integer, nullable=False),
        Column("kind", String(16), nullable=False),
        Column("entry_id", String(32)),
        Column("part", Integer, nullable=False),
        Column("state", String(16), nullable=False),
        Column("message_id", BigInteger),
        Column("attempts", Integer, nullable=False),
        Column("next_attempt_at", DateTime(timezone=True)),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Index("ix_contest_posts_state", "state"),
    )
    Table(
        "contest_audit", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("contest_id", String(32), ForeignKey("contests.id"), nullable=False),
        Column("guild_id", BigInteger, nullable=False),
        Column("actor_id", BigInteger, nullable=False),
        Column("action", String(16), nullable=False),
        Column("entry_number", Integer),
        Column("reason", Text),
        Column("at", DateTime(timezone=True), nullable=False),
    )
    metadata.create_all(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "jobs and results", _v1_jobs_and_results),
    Migration(2, "soft delete of jobs, guild settings, job indexes", _v2_soft_delete_guild_settings_indexes),
    Migration(3, "delivery outbox for job results and explanations", _v3_delivery_outbox),
    Migration(4, "indexes for the retention purge", _v4_retention_indexes),
    Migration(5, "why a job was refused, and an index for usage figures", _v5_refusal_reason_and_usage_index),
    Migration(6, "moderation: audit log and paused servers", _v6_moderation),
    Migration(7, "the safety checker's flag of each result image", _v7_result_safety_flags),
    Migration(8, "prompt contests: rounds, entries, votes, placings, posts, audit", _v8_prompt_contests),
)
LATEST_VERSION = MIGRATIONS[-1].version


def current_version(conn: Connection) -> int:
    """The schema version of the database; 0 when nothing was ever migrated."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    version_table = _schema_version_table(MetaData())
    return int(conn.execute(select(func.coalesce(func.max(version_table.c.version), 0))).scalar_one())


def lock_for_migration(conn: Connection) -> None:
    """Hold the migration lock until ``conn``'s transaction ends; another process's ``migrate`` waits for it."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_ID)))
    elif dialect == "sqlite":
        # SQLite has one writer at a time, and make_engine begins every transaction with BEGIN IMMEDIATE
        # (the write lock, waited for up to its busy timeout); check that this one has.
        if not conn.info.get(SQLITE_WRITE_LOCKED):
            raise StorageError("migrate() on SQLite needs a connection from bot.storage.db.make_engine "
                               "(its transactions take the write lock at BEGIN)")
    else:
        _log.warning("no migration lock for %s: do not start two processes on a new schema at once", dialect)


def migrate(
    conn: Connection, target: int | None = None, migrations: tuple[Migration, ...] = MIGRATIONS
) -> list[int]:
    """Apply the migrations above the current version up to ``target`` (default: latest).

    Takes the migration lock first (``lock_for_migration``), so it must run in a transaction.
    Returns the versions applied (empty when already up to date, as when another process just did it).
    """
    latest = migrations[-1].version
    target = latest if target is None else target
    lock_for_migration(conn)
    version_table = _schema_version_table(MetaData())
    version_table.create(conn, checkfirst=True)
    current = current_version(conn)
    if current > latest:
        raise StorageError(
            f"the database schema is version {current}, newer than this bot's {latest}; "
            "upgrade the bot or restore a matching backup"
        )
    applied = []
    for migration in migrations:
        if current < migration.version <= target:
            _log.info("migrating database schema to v%d: %s", migration.version, migration.description)
            migration.apply(conn)
            conn.execute(version_table.insert().values(
                version=migration.version, description=migration.description, applied_at=datetime.now(UTC)))
            applied.append(migration.version)
    return applied
