"""/stats and /me end to end: the real bot and discord.py client against the fake Discord, the tiny model,
SQLite, on a frozen clock (so "resets in ..." is exact). Figures against a known set of stored jobs, on both
databases, are in ``test_stats_figures.py``; the chart's drawing is checked here too."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from bot.core.config import BotConfig
from bot.features.stats import chart
from bot.features.stats.service import Day
from tests.bot_harness import UNLIMITED, WatchedStorage, is_result, png, running_bot, tiny_app_config
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.frozen_clock import FrozenClock

# Today 10:00 UTC: the quota (reset at 00:00 UTC) resets 14 h later.
TEN_AM = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(wall_start=TEN_AM.timestamp())


def chart_of(message: StoredMessage) -> Image.Image:
    assert [attachment.filename for attachment in message.attachments] == ["images-per-day.png"]
    image = Image.open(io.BytesIO(message.attachments[0].data))
    assert image.format == "PNG"
    return image.convert("RGB")


def bar_height(image: Image.Image, bar: chart.Bar) -> int:
    """How tall the bar drawn at ``bar``'s place is, measured on the picture from the zero line up."""
    middle = (bar.left + bar.right) // 2
    colour = image.getpixel((middle, bar.base - 1))
    if colour not in (chart.BAR, chart.TODAY):
        return 0
    height = 0
    while image.getpixel((middle, bar.base - 1 - height)) == colour:
        height += 1
    return height


async def delivered_and_refused(storage: WatchedStorage, done: int, refused: int) -> bool:
    """Whether storage holds ``done`` delivered results (their messages recorded) and ``refused`` refusals."""
    ended = await storage.jobs_in_states(["done"])
    delivered = [job for job in ended if job.delivery == "delivered" and job.result_message_id is not None]
    return len(delivered) == done and len(await storage.jobs_in_states(["refused"])) == refused


async def test_stats_and_me_show_the_figures_of_what_ran_with_a_chart(fake: FakeDiscord, tmp_path: Path,
                                                                     clock: FrozenClock) -> None:
    """README: "`/stats` ... Only you see it, unless you pass `share: True` to post it for the channel." and
    "`/me` (only you see it): ... your daily quota left and when it resets; your five latest images with links
    to their messages." """
    limits = UNLIMITED.model_copy(update={"daily_images_per_user": 4})
    async with running_bot(fake, tmp_path, tiny_app_config(fake, limits=limits)) as bot:
        storage = bot.services.storage
        assert isinstance(storage, WatchedStorage)
        results = []
        for user, count in (("alice", 2), ("alice", 2), ("bob", 1)):
            handle = await fake.slash("imagine", {"prompt": f"a fox for {user}", "count": count}, user=user)
            results.append(await handle.wait_original(is_result))
            await clock.advance(60)  # a minute apart: "your latest images" has an order
        # Over the quota: once without an image (admission refuses it), once with one (refused before the
        # download, by admission's dry run); both are stored with their reason.
        refused = await fake.slash("imagine", {"prompt": "one more"}, user="alice")
        assert (await refused.wait_original()).ephemeral
        upload = fake.serve_attachment(png(), "sketch.png")
        refused = await fake.slash("imagine", {"prompt": "one more"}, attachments={"image": upload}, user="alice")
        assert (await refused.wait_original()).ephemeral
        await storage.wait_until(lambda: delivered_and_refused(storage, 3, 2), what="3 results and 2 refusals")

        guild = fake.guild()
        alice, bob = fake.user("alice").id, fake.user("bob").id
        asked = await fake.slash("stats", user="carol")
        stats = await asked.wait_original(lambda message: message.attachments)
        assert stats.ephemeral  # only the asker sees it unless they share it
        assert stats.content.startswith("**/imagine in Art Club**")
        assert "Images: **5** today · **5** in the last 7 days · **5** in all" in stats.content
        assert f"Most images in the last 7 days: <@{alice}> 4 · <@{bob}> 1" in stats.content
        # On the frozen clock a job starts the instant it is asked for.
        assert "Wait before a request starts (last 7 days, 3 requests): median 0.0 s · 9 in 10 within 0.0 s" in \
            stats.content
        assert "GPU time: " in stats.content
        assert "Refused in the last 7 days: daily quota used up 2" in stats.content
        image = chart_of(stats)
        assert image.size == chart.SIZE
        bars = chart.bars([0] * 13 + [5])
        assert [bar_height(image, bar) for bar in bars] == [0] * 13 + [bars[-1].base - bars[-1].top]
        assert image.getpixel(((bars[-1].left + bars[-1].right) // 2, bars[-1].base - 2)) == chart.TODAY

        mine = await fake.slash("me", user="alice")
        me = await mine.wait_original(lambda message: message.attachments)
        assert me.ephemeral
        assert "Images: **4** today · **4** in the last 7 days · **4** in all" in me.content
        assert "Daily quota: **0** of 4 images left today; it resets in 13 h 57 min" in me.content
        channel = results[0].channel_id
        links = [f"https://discord.com/channels/{guild.id}/{channel}/{result.id}" for result in results[1::-1]]
        assert [line.rsplit(" ", 1)[-1] for line in me.content.splitlines() if line.startswith("•")] == links
        assert "“a fox for alice” (2 images)" in me.content
        assert chart_of(me).size == chart.SIZE

        shared = await fake.slash("stats", {"share": True}, user="bob")
        posted = await shared.wait_original(lambda message: message.attachments)
        assert not posted.ephemeral and f"<@{alice}> 4" in posted.content
        # Mentions are shown, never pinging: every reply went out with allowed mentions off.
        for message in (stats, me, posted):
            sent = [entry for entry in fake.allowed_mentions if entry.message_id == message.id]
            assert sent and all(entry.value == {"parse": []} for entry in sent)


async def test_me_in_a_direct_message_counts_direct_messages(fake: FakeDiscord, tmp_path: Path) -> None:
    config = tiny_app_config(fake, bot=BotConfig(progress_interval_s=0.0, allow_dms=True))
    async with running_bot(fake, tmp_path, config) as bot:
        storage = bot.services.storage
        assert isinstance(storage, WatchedStorage)
        made = await fake.slash("imagine", {"prompt": "a quiet lake"}, user="alice", dm=True)
        await made.wait_original(is_result)
        # The result is shown before its message id is stored (outbox order); the link needs the stored id.
        await storage.wait_until(lambda: delivered_and_refused(storage, 1, 0), what="the result delivered")
        mine = await fake.slash("me", user="alice", dm=True)
        me = await mine.wait_original(lambda message: message.attachments)
        assert me.content.startswith("**Your /imagine use in direct messages**")
        assert "Images: **1** today" in me.content and "Daily quota: none" in me.content
        assert "https://discord.com/channels/@me/" in me.content


def test_the_chart_draws_one_bar_per_day_to_scale_with_today_highlighted() -> None:
    counts = [0, 3, 5, 2, 0, 8, 12, 7, 4, 0, 1, 9, 15, 6]
    first = date(2030, 2, 20)
    data = chart.png([Day(first + timedelta(days=index), count) for index, count in enumerate(counts)], "title")
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size == chart.SIZE == (640, 300)
    boxes = chart.bars(counts)
    heights = [bar_height(image, box) for box in boxes]
    assert heights == [box.base - box.top for box in boxes]
    assert [height > 0 for height in heights] == [count > 0 for count in counts]
    # To scale: the scale tops at 20 (15 rounded up), so 15 images fill three quarters of the plot.
    assert chart.scale_top(15) == 20 and heights[12] == round((boxes[12].base - 52) * 15 / 20)
    assert sorted(range(14), key=lambda i: heights[i]) == sorted(range(14), key=lambda i: counts[i])
    middle = (boxes[-1].left + boxes[-1].right) // 2
    assert image.getpixel((middle, boxes[-1].base - 2)) == chart.TODAY
    assert image.getpixel(((boxes[0].left + boxes[0].right) // 2, boxes[0].base - 2)) == chart.BACKGROUND
    assert len(data) < 64_000  # small enough to upload anywhere, quickly


def test_scale_tops_are_round() -> None:
    assert [chart.scale_top(peak) for peak in (0, 1, 2, 3, 7, 10, 11, 26, 480)] == [1, 1, 2, 5, 10, 10, 20, 50, 500]
