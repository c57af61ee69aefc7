"""/stats and /me figures against a known set of stored jobs, on SQLite and PostgreSQL (``database_url``).

The jobs are written through ``Storage`` with chosen times, users, statuses, timings and refusals; the days are
the server's quota days in New York with a 06:00 reset, across the 2030 switch to summer time (10 March), so
a day computed as "24 hours before" would put the edge cases on the wrong day. The PostgreSQL databases run in
a time zone far from both (``tests/storage_backends.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from bot.core.config import AppConfig, GuildConfig, Limits
from bot.features.stats.service import StatsService
from bot.features.stats.texts import jump_url, member_text, reason_text, server_text
from bot.scheduler import Scheduler
from bot.storage import Storage
from generation.request import GenerationRequest
from tests.bot_harness import GateExecutor
from tests.frozen_clock import FrozenClock

NEW_YORK = ZoneInfo("America/New_York")
GUILD, OTHER_GUILD = 500, 600
ALICE, BOB, CAROL = 11, 12, 13
NOW = datetime(2030, 3, 17, 12, 0, tzinfo=NEW_YORK)  # a week after the switch to summer time
TODAY = date(2030, 3, 17)


class StorageClock:
    def __init__(self) -> None:
        self.now = NOW.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.now


def local(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment in New York in March 2030."""
    return datetime(2030, 3, day, hour, minute, tzinfo=NEW_YORK)


@contextmanager
def sql_sent() -> Iterator[list[str]]:
    """Every SQL statement sent to any database meanwhile."""
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


@pytest.fixture
async def storage(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Storage, StorageClock]]:
    clock = StorageClock()
    async with Storage(tmp_path, database_url, clock=clock) as opened:
        yield opened, clock


def scheduler() -> Scheduler:
    limits = Limits(quota_reset_hour=6, quota_timezone="America/New_York", daily_images_per_user=10)
    config = AppConfig(guilds={GUILD: GuildConfig(limits=limits)})
    return Scheduler(GateExecutor(), config, clock=FrozenClock(wall_start=NOW.timestamp()))


async def made(store: tuple[Storage, StorageClock], user: int, finished: datetime, images: int, *,
               guild: int | None = GUILD, wait_s: float = 1.0, run_s: float = 2.0, message_id: int | None = None,
               prompt: str = "a fox") -> str:
    """A job that made ``images`` images, finished at ``finished`` after waiting ``wait_s`` and running ``run_s``
    (its stored timings: 0.5 s load, the rest denoise and decode)."""
    storage, clock = store
    finished = finished.astimezone(UTC)
    clock.now = finished - timedelta(seconds=wait_s + run_s)
    job = await storage.create_job(GenerationRequest(prompt, seed=1, count=images), user_id=user, guild_id=guild,
                                   channel_id=77)
    clock.now = finished - timedelta(seconds=run_s)
    await storage.update_status(job.id, "running")
    clock.now = finished
    await storage.update_status(job.id, "done", seeds=list(range(images)),
                                timings={"load_s": 0.5, "denoise_s": run_s - 0.75, "decode_s": 0.25})
    if message_id is not None:
        await storage.record_delivery(job.id, result_message_id=message_id)
    return job.id


async def refused(store: tuple[Storage, StorageClock], user: int, when: datetime, refusal: str | None, *,
                  guild: int = GUILD) -> None:
    storage, clock = store
    clock.now = when.astimezone(UTC)
    await storage.create_job(GenerationRequest("no"), user_id=user, guild_id=guild, status="refused",
                             refusal=refusal)


async def test_server_figures_count_quota_days_top_users_waits_gpu_time_and_refusals(
        storage: tuple[Storage, StorageClock]) -> None:
    # Today (17 March, from 06:00 EDT): alice 2 + 1 images, bob 3; 05:59 still counts as 16 March.
    await made(storage, ALICE, local(17, 7), 2, wait_s=1)
    await made(storage, ALICE, local(17, 11), 1, wait_s=2)
    await made(storage, BOB, local(17, 9), 3, wait_s=3)
    await made(storage, CAROL, local(17, 5, 59), 4, wait_s=4)
    await made(storage, BOB, local(12, 8), 2, wait_s=100)
    # The DST edges, older than 7 quota days (in the chart and the total only): 10 March 06:30 EDT is 10 March's
    # quota day; 9 March 05:30 EST still belongs to 8 March.
    await made(storage, BOB, local(10, 6, 30), 2, wait_s=5)
    await made(storage, BOB, local(9, 5, 30), 5, wait_s=7)
    await made(storage, ALICE, local(4, 6, 0), 1)  # the first charted day begins exactly then
    await made(storage, ALICE, local(4, 5, 59), 6)  # the day before the chart: only in the total
    # Not this server's: another server, a direct message; and jobs that made nothing.
    await made(storage, ALICE, local(17, 8), 9, guild=OTHER_GUILD)
    await made(storage, ALICE, local(17, 8), 9, guild=None)
    storage_, clock = storage
    clock.now = local(17, 8).astimezone(UTC)
    failed = await storage_.create_job(GenerationRequest("x", seed=1, count=4), user_id=CAROL, guild_id=GUILD)
    await storage_.update_status(failed.id, "failed", error="no")
    # Refusals: two over the quota, one too fast, one stored before reasons were kept; one too old, one elsewhere.
    for when, why in [(local(17, 7), "limits.daily_images_per_user"), (local(16, 7), "limits.daily_images_per_user"),
                      (local(12, 7), "limits.user_rate"), (local(11, 7), None), (local(15, 7), "models.sdxl"),
                      (local(9, 7), "limits.user_rate")]:
        await refused(storage, CAROL, when, why)
    await refused(storage, CAROL, local(17, 7), "paused", guild=OTHER_GUILD)

    with sql_sent() as sent:
        figures = await StatsService(storage_, scheduler()).server(GUILD)
    # Aggregates only: no input-image blob, no stored result read, no job row loaded whole.
    assert sent and not [sql for sql in sent if "init_image" in sql or "FROM results" in sql]

    days = {day.date: day.images for day in figures.usage.days}
    assert len(figures.usage.days) == 14 and figures.usage.days[-1].date == TODAY
    assert days == {date(2030, 3, d): n for d, n in
                    [(4, 1), (5, 0), (6, 0), (7, 0), (8, 5), (9, 0), (10, 2), (11, 0), (12, 2), (13, 0), (14, 0),
                     (15, 0), (16, 4), (17, 6)]}
    assert (figures.usage.today, figures.usage.week, figures.usage.total) == (6, 12, 26)
    assert figures.top_users == [(BOB, 5), (CAROL, 4), (ALICE, 3)]
    # Jobs started in the last 7 quota days waited 1, 2, 3, 4 and 100 s: median 3 s, 9 in 10 within 100 s.
    assert figures.waits is not None
    assert (figures.waits.jobs, round(figures.waits.median_s, 3), round(figures.waits.p90_s, 3)) == (5, 3.0, 100.0)
    assert round(figures.gpu_week_s, 3) == 5 * 2.0 and round(figures.gpu_total_s, 3) == 9 * 2.0
    assert figures.refusals == [("limits.daily_images_per_user", 2), ("limits.user_rate", 1), ("models.sdxl", 1),
                                (None, 1)]

    text = server_text("Art Club", figures)
    assert "Images: **6** today · **12** in the last 7 days · **26** in all" in text
    assert f"Most images in the last 7 days: <@{BOB}> 5 · <@{CAROL}> 4 · <@{ALICE}> 3" in text
    assert "Wait before a request starts (last 7 days, 5 requests): median 3.0 s · 9 in 10 within 1 min 40 s" in text
    assert "GPU time: 10 s in the last 7 days · 18 s in all" in text
    assert ("Refused in the last 7 days: daily quota used up 2 · asking too fast 1 · model unavailable 1 · "
            "reason not recorded 1") in text
    assert "limits." not in text and "models." not in text  # plain words, no config keys


async def test_a_server_without_jobs_says_so(storage: tuple[Storage, StorageClock]) -> None:
    figures = await StatsService(storage[0], scheduler()).server(GUILD)
    assert [day.images for day in figures.usage.days] == [0] * 14
    assert figures.top_users == [] and figures.waits is None and figures.refusals == []
    text = server_text(None, figures)
    assert text.startswith("**/imagine in this server**")
    assert "Images: **0** today" in text and "Refused in the last 7 days: none" in text


async def test_member_figures_quota_and_latest_images_with_links(storage: tuple[Storage, StorageClock]) -> None:
    ids = [await made(storage, ALICE, local(17, 6 + hour), 1, message_id=9000 + hour, prompt=f"fox {hour}")
           for hour in range(6)]
    await made(storage, ALICE, local(12, 7), 2, prompt="a very long prompt " * 10)  # no result message recorded
    await made(storage, BOB, local(17, 8), 3, message_id=8000)
    await made(storage, ALICE, local(17, 9), 4, guild=None, message_id=7000)  # in direct messages
    storage_, _ = storage
    await storage_.mark_deleted(ids[5])  # deleted: not listed, still counted
    sched = scheduler()
    sched.restore_usage(GUILD, ALICE, 6)  # what admission counted today

    with sql_sent() as sent:
        figures = await StatsService(storage_, sched).member(GUILD, ALICE, frozenset())
    assert sent and not [sql for sql in sent if "init_image" in sql or "FROM results" in sql]

    assert (figures.usage.today, figures.usage.week, figures.usage.total) == (6, 8, 8)
    assert (figures.quota.limit, figures.quota.used, figures.quota.left) == (10, 6, 4)
    assert figures.quota.resets_at == local(18, 6).timestamp()
    assert [made_.prompt for made_ in figures.last] == ["fox 4", "fox 3", "fox 2", "fox 1", "fox 0"]
    assert jump_url(GUILD, figures.last[0]) == f"https://discord.com/channels/{GUILD}/77/9004"
    text = member_text(GUILD, figures, resets_in_s=18 * 3600)
    assert "Daily quota: **4** of 10 images left today; it resets in 18 h" in text
    assert f"“fox 4” (1 image) https://discord.com/channels/{GUILD}/77/9004" in text

    in_dms = await StatsService(storage_, sched).member(0, ALICE, frozenset())
    assert (in_dms.usage.today, in_dms.usage.total) == (4, 4)
    assert in_dms.quota.limit == 100  # the default limits: no server overrides in direct messages
    assert jump_url(0, in_dms.last[0]) == "https://discord.com/channels/@me/77/7000"
    assert "Your /imagine use in direct messages" in member_text(0, in_dms, resets_in_s=60)
    six = await StatsService(storage_, sched).member(GUILD, ALICE, frozenset())
    await storage_.mark_deleted(ids[4])  # the older request without a link moves into the last five
    five = await StatsService(storage_, sched).member(GUILD, ALICE, frozenset())
    assert six.last[-1].prompt == "fox 0" and five.last[-1].message_id is None
    last_line = member_text(GUILD, five, resets_in_s=60).splitlines()[-1]
    assert last_line.endswith("“a very long prompt a very long prompt a very long prompt a…” (2 images)")  # 60 at most


def test_refusal_reasons_read_as_plain_words() -> None:
    assert reason_text("limits.daily_images_per_user") == "daily quota used up"
    assert reason_text("models.anything") == "model unavailable"
    assert reason_text("content.rule-7") == "other"
    assert reason_text(None) == "reason not recorded"
