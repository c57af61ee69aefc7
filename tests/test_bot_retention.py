"""Retention through Discord: the real bot against the fake Discord on a frozen clock, so "a month
later" takes no time and the purge that runs in the background is the one users would meet; plus the
retention: settings themselves and what a delete means for follow-ups resumed after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.config import AppConfig, RetentionConfig, load_config, parse_config
from bot.core.config_store import ConfigStore
from bot.features.imagine.service import ImagineService
from bot.scheduler import Scheduler, SimulatedClock
from bot.storage import JobRecord, Storage
from generation.errors import ConfigError
from generation.request import GenerationRequest
from tests.bot_harness import WatchedStorage, button, is_result, png, running_bot
from tests.fake_discord import FakeDiscord
from tests.frozen_clock import FrozenClock
from tests.scheduler_helpers import FakeExecutor, make_config

REPO = Path(__file__).resolve().parent.parent


async def test_a_month_later_the_images_are_purged_and_the_buttons_say_so(fake: FakeDiscord, clock: FrozenClock,
                                                                         tmp_path: Path) -> None:
    """README: "`retention:` how long result images and input images are kept (`images_days`, 30), job
    records without their images (`jobs_days`, 365; ...) and Discord interaction tokens (15 minutes)"."""
    async with running_bot(fake, tmp_path) as bot:
        storage = bot.services.storage
        assert isinstance(storage, WatchedStorage)
        handle = await fake.slash("imagine", {"prompt": "an old fox --seed 5"}, user="alice")
        result = await handle.wait_original(is_result)
        files = list((tmp_path / "images").glob("*.png"))
        assert len(files) == 1 and (await storage.jobs_in_states(["done"]))[0].interaction is not None

        async def purge_runs(at_least: int) -> bool:
            return storage.purge_runs >= at_least

        async def later(seconds: float) -> None:
            """Move the clock; the background purge wakes on it: wait until that run has finished."""
            runs = storage.purge_runs
            await clock.advance(seconds)
            await storage.wait_until(lambda: purge_runs(runs + 1), what="a purge run")

        await storage.wait_until(lambda: purge_runs(1), what="the purge at start-up")  # now asleep on the clock
        await later(16 * 60)
        [job] = await storage.jobs_in_states(["done"])
        assert job.interaction is None  # the token is cleared after 15 minutes
        assert all(path.exists() for path in files)  # images stay for 30 days
        await later(31 * 24 * 3600)
        assert not any(path.exists() for path in files)
        [job] = await storage.jobs_in_states(["done"])
        assert job.request.prompt == "an old fox"  # the record stays, without its images

        upscale = await fake.click(result, button(result, "U1"), user="alice")
        reply = await upscale.wait_followup(lambda m: m.ephemeral)
        assert "that image is no longer available (images are kept for 30 days)" in reply.content
        # The record still holds the recipe: a reroll makes new images from it.
        reroll = await fake.click(result, button(result, "🔄"), user="alice")
        rerolled = await reroll.wait_original(is_result)
        assert rerolled.content.startswith("**an old fox**") and "Rerolled" in rerolled.content


def test_config_yaml_explains_every_retention_key() -> None:
    """Every key of ``retention:`` is in the shipped config.yaml with a comment, with the defaults."""
    lines = (REPO / "config.yaml").read_text().splitlines()
    start = lines.index("retention:")
    for key in RetentionConfig.model_fields:
        line = next((line for line in lines[start:] if line.strip().startswith(f"{key}:")), None)
        assert line is not None and "#" in line, f"config.yaml does not explain retention.{key}"
    assert load_config(REPO / "config.yaml").retention == AppConfig().retention


def test_retention_values_are_checked() -> None:
    assert parse_config("retention: {images_days: null, jobs_days: 90}\n").retention.images_days is None
    with pytest.raises(ConfigError, match=r"retention.interaction_token_minutes \(line 1\).*greater than or equal"):
        parse_config("retention: {interaction_token_minutes: 5}\n")
    # Daily quotas are rebuilt from job records at a restart: a record kept less than a quota day would hand a
    # member their images again.
    with pytest.raises(ConfigError, match=r"retention.jobs_days \(line 1\): 1 is out of range; allowed: 2 to 36500 "
                                          r"days \(quotas are counted from them\)"):
        parse_config("retention: {jobs_days: 1}\n")


async def test_a_follow_up_whose_source_was_deleted_is_dropped_at_restart_saying_why(tmp_path: Path) -> None:
    """🗑 removes the copy an upscale holds as its input: if that upscale was still queued when the bot
    stopped, the next start drops it with the reason instead of running it without its image."""
    config = make_config()
    async with Storage(tmp_path) as storage:
        parent = await storage.create_job(GenerationRequest("a fox", seed=1), user_id=1, guild_id=5)
        await storage.update_status(parent.id, "running")
        await storage.save_result_images(parent.id, [png("red")], [1])
        await storage.update_status(parent.id, "done", seeds=[1])
        image = await storage.load_result_image(parent.id, 0)
        upscale = await storage.create_job(GenerationRequest("a fox", seed=1, init_image=image, strength=0.3),
                                           user_id=1, guild_id=5, channel_id=6, kind="upscale",
                                           parent_job_id=parent.id)
        await storage.set_messages(upscale.id, status_message_id=77)
        await storage.mark_deleted(parent.id)

        clock = SimulatedClock()
        service = ImagineService(ConfigStore(initial=config), storage,
                                 Scheduler(FakeExecutor(clock), config, clock=clock), clock)

        async def no_status(stored: JobRecord) -> int | None:
            return None

        resumed, dropped = await service.resume(no_status)
        assert resumed == [] and [job.id for job in dropped] == [upscale.id]
        assert dropped[0].error == "the image it started from was deleted"
