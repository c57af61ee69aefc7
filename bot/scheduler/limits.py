"""Admission control: token buckets, daily quotas and caps on queued/running jobs.

``Admission.admit`` checks every limit first and consumes nothing unless all pass, so a refused
request costs the user nothing; ``Admission.check`` runs the same checks and never consumes. Buckets
and quotas are kept per (guild, user) because each server sets its own limits; the guild bucket is
shared by the whole server. In direct messages each user is a "server" of their own (``Job.lane``):
their own server bucket and queue cap, under the default limits.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

from bot.core.config import Bucket, Limits, SchedulerConfig
from bot.core.errors import QueueFull, QuotaExceeded, RateLimited
from bot.core.text import format_duration, plural, rate_words
from bot.scheduler.jobs import Job

UserKey = tuple[int, int]
_PRUNE_EVERY = 4096


class TokenBucket:
    """Tokens refill at ``rate`` per second up to ``capacity``. Rate and capacity come with each call
    so a config reload applies to existing buckets at once. A request larger than the bucket is let
    through when the bucket is full and leaves it in debt, so it is slow but never impossible."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, now: float, rate: float, capacity: float) -> None:
        self.tokens = capacity
        self.stamp = now
        self.rate = rate
        self.capacity = capacity

    def _refill(self, now: float, rate: float, capacity: float) -> None:
        self.tokens = min(capacity, self.tokens + max(0.0, now - self.stamp) * rate)
        self.stamp, self.rate, self.capacity = now, rate, capacity

    def wait_time(self, now: float, amount: float, rate: float, capacity: float) -> float:
        """Seconds until ``amount`` can be taken; 0 when it can be taken now."""
        self._refill(now, rate, capacity)
        need = min(amount, capacity)
        return 0.0 if self.tokens >= need - 1e-9 else (need - self.tokens) / rate

    def take(self, now: float, amount: float, rate: float, capacity: float) -> None:
        self._refill(now, rate, capacity)
        self.tokens -= amount

    def is_full(self, now: float) -> bool:
        self._refill(now, self.rate, self.capacity)
        return self.tokens >= self.capacity


@dataclass(frozen=True)
class BucketLevel:
    """A bucket as kept outside this process: its tokens at a wall-clock second (a monotonic stamp means nothing
    after a restart or in another process), and the rate and capacity it was filling at."""

    tokens: float
    wall: float
    rate: float
    capacity: float

    def seconds_to_full(self) -> float:
        """From ``wall``, at ``rate``; 0 when full (a full bucket is the same as none)."""
        return max(0.0, (self.capacity - self.tokens) / self.rate) if self.rate > 0 else 0.0


BucketTaken = Callable[[str, object, BucketLevel], None]


class BucketStore(Protocol):
    """Keeps bucket levels beyond this process (``bot.bucket_mirror``: Redis). Admission stays in memory and never
    waits for it: ``taken`` notes a bucket's level after a take (kind ``user`` or ``guild``, the bucket's key) for
    a write in the background; ``load`` returns what was kept, at start-up; ``close`` writes what is pending."""

    def taken(self, kind: str, key: object, level: BucketLevel) -> None: ...

    async def load(self) -> list[tuple[str, object, BucketLevel]]: ...

    async def close(self) -> None: ...


class BucketSet:
    """Buckets by key, created full on first use; full buckets are dropped now and then (same as new)."""

    def __init__(self, kind: str = "") -> None:
        self.kind = kind  # "user" or "guild": names the set for a BucketStore
        self._buckets: dict[object, TokenBucket] = {}
        self._ops = 0

    def wait_time(self, key: object, now: float, amount: float, spec: Bucket) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:  # a new bucket is full, and a full bucket admits any amount
            return 0.0
        return bucket.wait_time(now, amount, spec.rate, spec.capacity)

    def take(self, key: object, now: float, amount: float, spec: Bucket) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(now, spec.rate, spec.capacity)
        bucket.take(now, amount, spec.rate, spec.capacity)
        self._ops += 1
        if self._ops % _PRUNE_EVERY == 0:
            self._buckets = {k: b for k, b in self._buckets.items() if not b.is_full(now)}
        return bucket

    def restore(self, key: object, level: BucketLevel, stamp: float, now: float) -> bool:
        """Put back a bucket kept elsewhere, ``level.tokens`` at clock time ``stamp``; False (and nothing kept)
        when it is full by ``now``."""
        bucket = TokenBucket(stamp, level.rate, level.capacity)
        bucket.tokens = level.tokens
        if bucket.is_full(now):
            return False
        self._buckets[key] = bucket
        return True

    def __len__(self) -> int:
        return len(self._buckets)


def quota_period(wall: float, reset_hour: int, timezone: str) -> tuple[int, float]:
    """The quota day containing ``wall`` (an ordinal) and the epoch second it ends."""
    zone = ZoneInfo(timezone)
    local = dt.datetime.fromtimestamp(wall, zone)
    day = local.date() if local.hour >= reset_hour else local.date() - dt.timedelta(days=1)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(reset_hour), tzinfo=zone)
    return day.toordinal(), end.timestamp()


def quota_period_start(wall: float, reset_hour: int, timezone: str) -> float:
    """The epoch second the quota day containing ``wall`` began."""
    day, _ = quota_period(wall, reset_hour, timezone)
    zone = ZoneInfo(timezone)
    return dt.datetime.combine(dt.date.fromordinal(day), dt.time(reset_hour), tzinfo=zone).timestamp()


def quota_day_starts(wall: float, reset_hour: int, timezone: str, days: int) -> list[dt.datetime]:
    """When the last ``days`` quota days began, oldest first, as aware datetimes in the quota's zone (their
    ``date()`` names the day); the last is the day containing ``wall``. Counted in calendar days of the
    zone, so a day across a DST change is 23 or 25 hours long."""
    today, _ = quota_period(wall, reset_hour, timezone)
    zone = ZoneInfo(timezone)
    return [dt.datetime.combine(dt.date.fromordinal(today - back), dt.time(reset_hour), tzinfo=zone)
            for back in range(days - 1, -1, -1)]


class DailyQuota:
    """Images used per key in the current quota day; a new day starts from zero."""

    def __init__(self) -> None:
        self._used: dict[object, tuple[int, int]] = {}

    def used(self, key: object, period: int) -> int:
        entry = self._used.get(key)
        return entry[1] if entry is not None and entry[0] == period else 0

    def consume(self, key: object, period: int, images: int) -> None:
        if len(self._used) > _PRUNE_EVERY:
            # Keep yesterday too: guilds in other time zones or reset hours are a quota day behind.
            self._used = {k: v for k, v in self._used.items() if v[0] >= period - 1}
        entry = self._used.get(key)
        if entry is not None and entry[0] > period:
            return  # usage from an earlier quota day (rebuilt after a restart) no longer counts
        self._used[key] = (period, self.used(key, period) + images)

    def refund(self, key: object, period: int, images: int) -> None:
        entry = self._used.get(key)
        if entry is not None and entry[0] == period:
            self._used[key] = (period, max(0, entry[1] - images))


class Occupancy:
    """How many jobs are queued and running, per user, per guild and in total."""

    def __init__(self) -> None:
        self.queued_user: Counter[UserKey] = Counter()
        self.queued_guild: Counter[int] = Counter()
        self.running_user: Counter[UserKey] = Counter()
        self.running_guild: Counter[int] = Counter()
        self.queued_total = 0
        self.running_total = 0

    def queue(self, job: Job, delta: int) -> None:
        self.queued_user[job.user_key] += delta
        self.queued_guild[job.lane] += delta
        self.queued_total += delta
        if delta < 0:
            _drop_zero(self.queued_user, job.user_key)
            _drop_zero(self.queued_guild, job.lane)

    def run(self, job: Job, delta: int) -> None:
        self.running_user[job.user_key] += delta
        self.running_guild[job.lane] += delta
        self.running_total += delta
        if delta < 0:
            _drop_zero(self.running_user, job.user_key)
            _drop_zero(self.running_guild, job.lane)


def _drop_zero(counter: Counter[UserKey] | Counter[int], key: object) -> None:
    if counter.get(key) == 0:  # type: ignore[call-overload]
        del counter[key]


@dataclass(frozen=True)
class Charge:
    """What admission consumed from the daily quota, so a job that makes no images can refund it."""

    key: UserKey
    period: int
    images: int


class Admission:
    """Checks and consumes the admission limits of one job."""

    def __init__(self, on_take: BucketTaken | None = None) -> None:
        self.user_buckets = BucketSet("user")
        self.guild_buckets = BucketSet("guild")
        self.quota = DailyQuota()
        self._on_take = on_take  # a BucketStore's ``taken``: levels outlive the process

    def restore_bucket(self, kind: str, key: object, level: BucketLevel, now: float, wall: float) -> bool:
        """Put back a bucket kept outside the process (at start-up). Its wall stamp becomes a stamp on this clock,
        never a future one (another machine's clock ahead of ours must not refill it late). False when the kind
        is unknown or the bucket is full by now."""
        buckets = {"user": self.user_buckets, "guild": self.guild_buckets}.get(kind)
        if buckets is None:
            return False
        return buckets.restore(key, level, now - max(0.0, wall - level.wall), now)

    def record_usage(self, key: UserKey, images: int, limits: Limits, wall: float) -> Charge | None:
        """Count images against the daily quota without checking it (jobs admitted before a restart)."""
        if limits.daily_images_per_user is None:
            return None
        period, _ = quota_period(wall, limits.quota_reset_hour, limits.quota_timezone)
        self.quota.consume(key, period, images)
        return Charge(key, period, images)

    def admit(self, job: Job, limits: Limits, scheduler: SchedulerConfig, occupancy: Occupancy,
              now: float, wall: float) -> Charge | None:
        """Raise the first Refused that applies; otherwise consume tokens/quota and return the charge."""
        charge = self.check(job, limits, scheduler, occupancy, now, wall)
        for bucket_set, key, spec, _, _ in self._buckets(job, limits):
            if spec is not None:
                bucket = bucket_set.take(key, now, 1.0 if spec.unit == "requests" else job.cost, spec)
                if self._on_take is not None:  # after the take: its stamp is now, so ``wall`` is its wall stamp
                    self._on_take(bucket_set.kind, key,
                                  BucketLevel(bucket.tokens, wall, bucket.rate, bucket.capacity))
        if charge is not None:
            self.quota.consume(charge.key, charge.period, charge.images)
        return charge

    def _buckets(self, job: Job, limits: Limits) -> tuple[tuple[BucketSet, object, Bucket | None, str, str], ...]:
        # In direct messages the "server" bucket is the user's own lane: both limits are theirs.
        server = "This server" if job.guild_id else "You"
        return ((self.user_buckets, job.user_key, limits.user_rate, "limits.user_rate", "You"),
                (self.guild_buckets, job.lane, limits.guild_rate, "limits.guild_rate", server))

    def check(self, job: Job, limits: Limits, scheduler: SchedulerConfig, occupancy: Occupancy,
              now: float, wall: float) -> Charge | None:
        """Raise the first Refused that applies; otherwise return what admitting would charge. Consumes nothing."""
        self._check_caps(job, limits, scheduler, occupancy)
        for bucket_set, key, spec, name, who in self._buckets(job, limits):
            if spec is None:
                continue
            wait = bucket_set.wait_time(key, now, 1.0 if spec.unit == "requests" else job.cost, spec)
            if wait > 0:
                raise RateLimited(rate_refusal(who, spec, wait), limit=name, value=spec.describe(), retry_after=wait)
        charge = None
        if limits.daily_images_per_user is not None:
            period, resets_at = quota_period(wall, limits.quota_reset_hour, limits.quota_timezone)
            used = self.quota.used(job.user_key, period)
            if used + job.images > limits.daily_images_per_user:
                retry = max(0.0, resets_at - wall)
                left = max(0, limits.daily_images_per_user - used)
                raise QuotaExceeded(
                    quota_refusal(left, limits.daily_images_per_user, job.images) + " " + quota_reset(limits, retry),
                    limit="limits.daily_images_per_user", value=limits.daily_images_per_user,
                    retry_after=retry, resets_at=resets_at)
            charge = Charge(job.user_key, period, job.images)
        return charge

    def refund(self, charge: Charge) -> None:
        self.quota.refund(charge.key, charge.period, charge.images)

    @staticmethod
    def _check_caps(job: Job, limits: Limits, scheduler: SchedulerConfig, occupancy: Occupancy) -> None:
        caps = (
            ("limits.max_queued_per_user", limits.max_queued_per_user, occupancy.queued_user[job.user_key],
             "You already have {n} waiting (the limit is {cap}); try again when one of them starts."),
            ("limits.max_queued_per_guild", limits.max_queued_per_guild, occupancy.queued_guild[job.lane],
             ("This server's queue" if job.guild_id else "The queue of your direct messages")
             + " is full ({n} waiting, the limit is {cap}); try again when one of them starts."),
            ("scheduler.max_queued", scheduler.max_queued, occupancy.queued_total,
             "The bot's queue is full ({n} waiting); try again in a few minutes."),
        )
        for name, cap, count, text in caps:
            if cap is not None and count >= cap:
                # The config key stays on the exception (limit, value) for the log; members read plain words.
                raise QueueFull(text.format(n=plural(count, "request"), cap=cap), limit=name, value=cap,
                                queue_length=count)


def rate_refusal(who: str, spec: Bucket, wait_s: float) -> str:
    """Why a token bucket refused, in members' words: 'You can make 6 requests a minute (3 at once); try again
    in 20 s.' A bucket of cost units is GPU time: 'This server can use GPU time for about 240 images ...'."""
    verb = "make" if spec.unit == "requests" else "use"
    words = rate_words(spec.unit, spec.amount, spec.window_s, spec.capacity)
    return f"{who} can {verb} {words}; try again in {format_duration(wait_s)}."


def quota_refusal(left: int, daily: int, asked: int) -> str:
    if left <= 0:
        return f"You have used your {plural(daily, 'daily image')}."
    return f"You have {left} of your {plural(daily, 'daily image')} left, and this request makes {asked}."


def quota_reset(limits: Limits, in_s: float) -> str:
    """When the daily images come back: 'They reset at 00:00 UTC, in 1 h 30 min.'"""
    return f"They reset at {limits.quota_reset_hour:02d}:00 {limits.quota_timezone}, in {format_duration(in_s)}."
