"""Admission: token buckets, queue caps, daily quotas, role overrides and what a refusal says."""

from __future__ import annotations

import datetime as dt

import pytest

from bot.core.config import Bucket, GuildConfig, Limits, UserLimits
from bot.core.errors import ChannelNotAllowed, GuildPaused, QueueFull, QuotaExceeded, RateLimited, ShuttingDown
from bot.scheduler import JobState, Scheduler, SimulatedClock, TokenBucket, quota_period
from tests.scheduler_helpers import OPEN_LIMITS, FakeExecutor, Recorder, make_config, make_job

UTC_2024_01_10_0300 = dt.datetime(2024, 1, 10, 3, 0, tzinfo=dt.UTC).timestamp()


def build(
    limits: Limits = OPEN_LIMITS, *, wall: float = UTC_2024_01_10_0300, **kwargs: object
) -> tuple[Scheduler, SimulatedClock, Recorder]:
    clock = SimulatedClock(wall_start=wall)
    recorder = Recorder()
    scheduler = Scheduler(FakeExecutor(clock), make_config(limits=limits, **kwargs), clock=clock, listener=recorder)
    return scheduler, clock, recorder


def test_token_bucket_refills_at_rate_up_to_burst() -> None:
    bucket = TokenBucket(0.0, rate=0.1, capacity=3)
    for _ in range(3):
        assert bucket.wait_time(0.0, 1, 0.1, 3) == 0
        bucket.take(0.0, 1, 0.1, 3)
    assert bucket.wait_time(0.0, 1, 0.1, 3) == pytest.approx(10.0)
    assert bucket.wait_time(1000.0, 1, 0.1, 3) == 0
    assert bucket.tokens == 3  # never above burst


def test_request_larger_than_burst_passes_when_full_and_leaves_debt() -> None:
    bucket = TokenBucket(0.0, rate=1.0, capacity=4)
    assert bucket.wait_time(0.0, 10, 1.0, 4) == 0
    bucket.take(0.0, 10, 1.0, 4)
    assert bucket.wait_time(0.0, 1, 1.0, 4) == pytest.approx(7.0)


async def test_user_rate_refusal_says_limit_value_and_retry() -> None:
    scheduler, clock, recorder = build(OPEN_LIMITS.model_copy(update={"user_rate": Bucket(amount=6, burst=3)}))
    for _ in range(3):
        scheduler.submit(make_job())
    job = make_job()
    with pytest.raises(RateLimited) as caught:
        scheduler.submit(job)
    refusal = caught.value
    assert refusal.limit == "limits.user_rate" and refusal.retry_after == pytest.approx(10.0)
    assert refusal.value == "6 requests per 60 s (burst 3)"  # the key and setting, for the log
    assert str(refusal) == "You can make 6 requests a minute (3 at once); try again in 10 s."  # plain words
    assert job.state is JobState.REFUSED and recorder.finished_states()[job.id] is JobState.REFUSED
    scheduler.submit(make_job(user=11))  # another user has their own bucket
    await clock.advance(10.0)
    assert scheduler.submit(make_job()).state is JobState.QUEUED


def test_guild_rate_in_cost_units_counts_big_requests_more() -> None:
    bucket = Bucket(unit="cost", amount=8, window_s=60, burst=8)
    scheduler, _, _ = build(OPEN_LIMITS.model_copy(update={"guild_rate": bucket}))
    scheduler.submit(make_job(user=1, count=4))  # cost 4
    scheduler.submit(make_job(user=2, count=4))
    with pytest.raises(RateLimited) as caught:
        scheduler.submit(make_job(user=3, count=2))
    assert str(caught.value) == ("This server can use GPU time for about 8 images of 512×512 at 25 steps a minute; "
                                 "try again in 15 s.")
    assert caught.value.retry_after == pytest.approx(15.0)
    scheduler.submit(make_job(guild=2, user=3, count=2))  # other servers are not affected


def test_queue_caps_per_user_guild_and_global_report_queue_length() -> None:
    limits = OPEN_LIMITS.model_copy(update={"max_queued_per_user": 2, "max_queued_per_guild": 3})
    scheduler, _, _ = build(limits, max_queued=5)
    first = scheduler.submit(make_job(user=1))
    scheduler.submit(make_job(user=1))
    with pytest.raises(QueueFull, match=r"^You already have 2 requests waiting \(the limit is 2\); try again when "
                                        r"one of them starts\.$") as caught:
        scheduler.submit(make_job(user=1))
    assert caught.value.queue_length == 2 and caught.value.limit == "limits.max_queued_per_user"
    scheduler.submit(make_job(user=2))
    with pytest.raises(QueueFull, match=r"^This server's queue is full \(3 requests waiting, the limit is 3\)"):
        scheduler.submit(make_job(user=3))
    scheduler.submit(make_job(guild=2, user=1))
    scheduler.submit(make_job(guild=2, user=2))
    with pytest.raises(QueueFull, match=r"^The bot's queue is full \(5 requests waiting\)") as caught:
        scheduler.submit(make_job(guild=3, user=1))
    assert caught.value.limit == "scheduler.max_queued" and "scheduler" not in str(caught.value)
    scheduler.cancel(first.id)
    assert scheduler.submit(make_job(guild=3, user=1)).state is JobState.QUEUED


async def test_a_refusal_consumes_neither_tokens_nor_quota() -> None:
    limits = OPEN_LIMITS.model_copy(
        update={"user_rate": Bucket(amount=1, window_s=60, burst=2), "daily_images_per_user": 3}
    )
    scheduler, clock, _ = build(limits)
    scheduler.submit(make_job(count=1))
    with pytest.raises(QuotaExceeded):
        scheduler.submit(make_job(count=4))  # refused by quota: its token is not taken
    scheduler.submit(make_job(count=1))  # second token still there
    with pytest.raises(RateLimited):
        scheduler.submit(make_job(count=1))  # refused by rate: no quota taken
    await clock.advance(60.0)
    scheduler.submit(make_job(count=1))  # the third image of the day


async def test_daily_quota_resets_at_configured_hour_in_zone() -> None:
    # 03:00 UTC on 10 Jan is 04:00 in Berlin: the quota day began at 04:00 local and ends 04:00 next day.
    limits = OPEN_LIMITS.model_copy(
        update={"daily_images_per_user": 4, "quota_reset_hour": 4, "quota_timezone": "Europe/Berlin"}
    )
    scheduler, clock, _ = build(limits)
    scheduler.submit(make_job(count=3))
    with pytest.raises(QuotaExceeded) as caught:
        scheduler.submit(make_job(count=2))
    refusal = caught.value
    assert refusal.resets_at == dt.datetime(2024, 1, 11, 3, 0, tzinfo=dt.UTC).timestamp()
    assert refusal.retry_after == pytest.approx(24 * 3600)
    assert "You have 1 of your 4 daily images left" in str(refusal)
    assert "They reset at 04:00 Europe/Berlin, in 24 h." in str(refusal)
    scheduler.submit(make_job(count=1))
    await clock.advance(24 * 3600)
    scheduler.submit(make_job(count=4))


def test_quota_period_handles_dst_and_hour_before_reset() -> None:
    # 30 March 2024 23:30 UTC = 31 March 00:30 CET, DST starts at 02:00 that night.
    wall = dt.datetime(2024, 3, 30, 23, 30, tzinfo=dt.UTC).timestamp()
    day, ends = quota_period(wall, 6, "Europe/Berlin")
    assert dt.date.fromordinal(day) == dt.date(2024, 3, 30)
    assert ends == dt.datetime(2024, 3, 31, 4, 0, tzinfo=dt.UTC).timestamp()  # 06:00 CEST


async def test_quota_is_given_back_when_a_job_makes_no_images() -> None:
    limits = OPEN_LIMITS.model_copy(update={"daily_images_per_user": 2})
    scheduler, _, _ = build(limits)
    job = scheduler.submit(make_job(count=2))
    with pytest.raises(QuotaExceeded, match="You have used your 2 daily images"):  # spent while queued
        scheduler.submit(make_job(count=1))
    scheduler.cancel(job.id)
    again = scheduler.submit(make_job(count=2))  # the cancelled job's images are back
    assert again.state is JobState.QUEUED


def test_role_overrides_raise_a_members_limits() -> None:
    guild = GuildConfig(roles={5: UserLimits(max_queued_per_user=3)}, limits=Limits(max_queued_per_user=1))
    scheduler, _, _ = build(OPEN_LIMITS, guilds={1: guild})
    scheduler.submit(make_job(user=1))
    with pytest.raises(QueueFull, match=r"the limit is 1\)"):
        scheduler.submit(make_job(user=1))
    for _ in range(3):
        scheduler.submit(make_job(user=2, roles=[5]))
    with pytest.raises(QueueFull, match=r"the limit is 3\)"):
        scheduler.submit(make_job(user=2, roles=[5]))


def test_channel_allow_list_names_allowed_channels() -> None:
    scheduler, _, _ = build(OPEN_LIMITS, guilds={1: GuildConfig(channels=[100, 101])})
    scheduler.submit(make_job(channel=101))
    with pytest.raises(ChannelNotAllowed,
                       match=r"^/imagine isn't enabled in this channel; use it in <#100> or <#101>\.$") as caught:
        scheduler.submit(make_job(channel=999))
    assert caught.value.allowed == [100, 101]
    scheduler.submit(make_job(guild=2, channel=999))  # no list: every channel


def test_paused_guild_refuses_until_resumed() -> None:
    scheduler, _, _ = build()
    scheduler.pause_guild(1)
    with pytest.raises(GuildPaused, match="paused"):
        scheduler.submit(make_job())
    scheduler.resume_guild(1)
    assert scheduler.submit(make_job()).state is JobState.QUEUED


async def test_shutdown_refuses_and_readmit_skips_limits() -> None:
    limits = OPEN_LIMITS.model_copy(update={"max_queued_per_user": 1, "daily_images_per_user": 1})
    scheduler, clock, recorder = build(limits)
    queued = scheduler.submit(make_job())
    handed = await clock.run_until_done(scheduler.drain())
    assert handed == [queued] and queued.state is JobState.HANDED_BACK
    assert queued.id not in recorder.finished_states()  # not terminal: the bot persists it
    with pytest.raises(ShuttingDown, match="restarting"):
        scheduler.submit(make_job())
    fresh, _, fresh_recorder = build(limits)
    fresh.submit(make_job())  # uses the one slot and the one image
    assert fresh.submit(queued, readmit=True).state is JobState.QUEUED
    assert fresh_recorder.kinds(queued.id) == ["queued"]


async def test_images_made_before_a_restart_and_readmitted_jobs_count_against_the_quota() -> None:
    limits = OPEN_LIMITS.model_copy(update={"daily_images_per_user": 4})
    scheduler, clock, _ = build(limits)
    scheduler.record_usage(1, 10, frozenset(), 2, clock.time() - 3600)  # made an hour before the restart
    scheduler.record_usage(1, 10, frozenset(), 3, clock.time() - 2 * 86400)  # an earlier day: not counted
    scheduler.submit(make_job(count=1), readmit=True)  # was queued at the restart: runs, and counts
    with pytest.raises(QuotaExceeded) as caught:
        scheduler.submit(make_job(count=2))
    assert "You have 1 of your 4 daily images left" in str(caught.value)


def test_quota_days_are_calendar_days_of_the_zone_across_dst() -> None:
    # 31 March 2024 12:00 CEST: DST began that night, so the day before was 23 hours long.
    wall = dt.datetime(2024, 3, 31, 10, 0, tzinfo=dt.UTC).timestamp()
    limits = OPEN_LIMITS.model_copy(update={"quota_reset_hour": 6, "quota_timezone": "Europe/Berlin"})
    scheduler, _, _ = build(limits, wall=wall)
    starts = scheduler.quota_days(None, 3)
    assert [start.date() for start in starts] == [dt.date(2024, 3, 29), dt.date(2024, 3, 30), dt.date(2024, 3, 31)]
    assert [start.astimezone(dt.UTC).hour for start in starts] == [5, 5, 4]  # 06:00 CET, CET, then 06:00 CEST
    assert starts[-1].timestamp() == scheduler.quota_day_start(None)


async def test_quota_left_counts_what_admission_charged_and_when_it_resets() -> None:
    limits = OPEN_LIMITS.model_copy(update={"daily_images_per_user": 5, "quota_reset_hour": 4,
                                            "quota_timezone": "Europe/Berlin"})
    scheduler, clock, _ = build(limits)
    scheduler.submit(make_job(guild=1, user=10, count=3))
    scheduler.restore_usage(1, 10, 1)  # made before a restart
    quota = scheduler.quota_left(1, 10, frozenset())
    assert (quota.limit, quota.used, quota.left) == (5, 4, 1)
    assert quota.resets_at == dt.datetime(2024, 1, 11, 3, 0, tzinfo=dt.UTC).timestamp()  # 04:00 in Berlin
    assert scheduler.quota_left(1, 11, frozenset()).left == 5  # someone else
    await clock.advance(24 * 3600)
    assert scheduler.quota_left(1, 10, frozenset()).used == 0  # a new quota day
    unlimited = build()[0].quota_left(1, 10, frozenset())
    assert (unlimited.limit, unlimited.left) == (None, None)


def test_refusals_are_counted_by_limit_for_submit_and_for_its_dry_run() -> None:
    limits = OPEN_LIMITS.model_copy(update={"daily_images_per_user": 2})
    scheduler, _, _ = build(limits)
    scheduler.submit(make_job(count=2))
    with pytest.raises(QuotaExceeded):
        scheduler.submit(make_job(count=1))
    with pytest.raises(QuotaExceeded):
        scheduler.check(make_job(count=1))  # the dry run before a download refuses the request too
    scheduler.pause_guild(1)
    with pytest.raises(GuildPaused):
        scheduler.check(make_job(count=1))
    assert scheduler.refusals() == {"limits.daily_images_per_user": 2, "paused": 1}
