"""The stats feature's rules, free of Discord: which figures /stats and /me show, over which periods.

Days are the server's quota days (its ``quota_reset_hour`` and ``quota_timezone``, as the scheduler counts
them), so "today" here is the day whose images count against today's quota. The figures come from
``queries`` (SQL aggregates over stored jobs); the quota left comes from the scheduler, which admits by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from bot.features.stats import queries
from bot.features.stats.queries import Made, Waits
from bot.scheduler import QuotaLeft, Scheduler
from bot.storage import Storage

DAYS_CHARTED = 14
WEEK_DAYS = 7
TOP_USERS = 5
LAST_MADE = 5


@dataclass(frozen=True)
class Day:
    date: date  # the quota day's date in the server's quota time zone
    images: int


@dataclass(frozen=True)
class Usage:
    """Images per day over the charted days (oldest first; the last is today) and in total."""

    days: list[Day]
    total: int

    @property
    def today(self) -> int:
        return self.days[-1].images

    @property
    def week(self) -> int:
        return sum(day.images for day in self.days[-WEEK_DAYS:])


@dataclass(frozen=True)
class ServerStats:
    usage: Usage
    top_users: list[tuple[int, int]]  # (user id, images) over the last 7 days
    waits: Waits | None  # over the last 7 days; None when no job started
    gpu_week_s: float
    gpu_total_s: float
    refusals: list[tuple[str | None, int]]  # (limit key, count) over the last 7 days


@dataclass(frozen=True)
class MemberStats:
    usage: Usage
    quota: QuotaLeft
    last: list[Made]


class StatsService:
    def __init__(self, storage: Storage, scheduler: Scheduler) -> None:
        self._storage = storage
        self._scheduler = scheduler

    async def server(self, guild_id: int) -> ServerStats:
        starts = self._scheduler.quota_days(guild_id, DAYS_CHARTED)
        week = starts[-WEEK_DAYS]
        async with self._storage.session() as session:
            per_day = await queries.images_per_day(session, guild_id, starts)
            usage = Usage([Day(start.date(), images) for start, images in zip(starts, per_day, strict=True)],
                          await queries.images_made(session, guild_id))
            return ServerStats(
                usage=usage, top_users=await queries.top_users(session, guild_id, week, TOP_USERS),
                waits=await queries.waits(session, guild_id, week),
                gpu_week_s=await queries.gpu_seconds(session, guild_id, week),
                gpu_total_s=await queries.gpu_seconds(session, guild_id),
                refusals=await queries.refusals(session, guild_id, week))

    async def member(self, guild_id: int, user_id: int, role_ids: frozenset[int]) -> MemberStats:
        """A member's figures in one server (``guild_id`` 0: their direct messages with the bot)."""
        stored_guild = guild_id or None  # storage keeps direct messages as guild None
        starts = self._scheduler.quota_days(guild_id or None, DAYS_CHARTED)
        async with self._storage.session() as session:
            per_day = await queries.images_per_day(session, stored_guild, starts, user_id=user_id)
            usage = Usage([Day(start.date(), images) for start, images in zip(starts, per_day, strict=True)],
                          await queries.images_made(session, stored_guild, user_id=user_id))
            last = await queries.last_made(session, stored_guild, user_id, LAST_MADE)
        return MemberStats(usage, self._scheduler.quota_left(guild_id, user_id, role_ids), last)
