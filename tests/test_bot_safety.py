"""The NSFW policy end to end, with diffusers' real safety checker built tiny: random weights, and thresholds set
so that it flags every image (``builtin:tiny-flag-all``) or none (``builtin:tiny``). A flagged image is blurred
and a spoiler, a spoiler only, or withheld, per the server's mode; an age-restricted channel follows its own
setting; U and V never serve a flagged image clear; the flag is stored and outlives a restart."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest_asyncio
from PIL import Image

from bot.app import ImagineBot
from bot.core.config import GuildConfig
from bot.core.policy import SafetyConfig, SafetyMode
from bot.discord_ui.images import NOTICE_COLOUR
from bot.discord_ui.result_message import ResultContent, result_message
from bot.storage import JobRecord
from tests.bot_harness import (
    WAIT_S,
    ShownFirstStorage,
    button,
    decode,
    public,
    running_bot,
    tiny_app_config,
    tiny_model,
    world,
)
from tests.fake_discord import FakeChannel, FakeDiscord, StoredMessage
from tests.frozen_clock import FrozenClock
from tests.test_bot_content import private_answer, stored_jobs

pytest_plugins = ["tests.bot_harness"]

FLAG_ALL = "builtin:tiny-flag-all"
FLAG_NONE = "builtin:tiny"


@pytest_asyncio.fixture
async def fake(clock: FrozenClock) -> AsyncIterator[FakeDiscord]:
    """The harness's world, plus a channel Discord marks age-restricted."""
    guilds = world()
    after_dark = FakeChannel("after-dark", position=2, nsfw=True)
    after_dark.guild_id = guilds[0].id
    guilds[0].channels.append(after_dark)
    async with FakeDiscord(guilds=guilds, default_timeout=WAIT_S, clock=clock) as started:
        with started.patch_discord():
            yield started
    started.assert_no_failures()


def config(fake: FakeDiscord, checker: str = FLAG_ALL, *, mode: SafetyMode | None = None,
           nsfw_mode: SafetyMode | None = None, **model: Any) -> Any:
    from generation.config import ExecutorConfig, GenerationConfig

    moderator = fake.guild().role("Moderator")
    assert moderator is not None
    generation = GenerationConfig(models={"tiny": tiny_model(**model)}, executor=ExecutorConfig(
        device="cpu", preview_every_steps=1, max_batch_images=4, safety_checker=checker))
    guild = GuildConfig(moderator_roles=[moderator.id], safety=SafetyConfig(mode=mode, nsfw_channel_mode=nsfw_mode))
    return tiny_app_config(fake, generation=generation, guilds={fake.guild().id: guild})


def has_buttons(message: StoredMessage) -> bool:
    return any(cid.startswith("imagine:u:") for cid in message.custom_ids())


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


async def job_of(bot: ImagineBot, prompt: str) -> JobRecord:
    done = await bot.services.storage.jobs_in_states(["done"])
    return next(job for job in reversed(done) if job.request.prompt.startswith(prompt))


async def stored_image(bot: ImagineBot, job: JobRecord, index: int = 0) -> Image.Image:
    png = await bot.services.storage.load_result_image(job.id, index)
    assert png is not None
    return Image.open(io.BytesIO(png)).convert("RGB")


def blurred_from(shown: Image.Image, original: Image.Image) -> bool:
    """A strong blur of ``original``: far from it pixel by pixel, and with almost none of its fine detail."""
    shown_px, original_px = pixels(shown), pixels(original)
    detail = np.abs(np.diff(shown_px, axis=1)).mean()
    return bool(np.abs(shown_px - original_px).mean() > 15 and detail < np.abs(np.diff(original_px, axis=1)).mean() / 4)


async def test_blur_mode_blurs_a_flagged_image_marks_it_a_spoiler_and_keeps_the_original(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    """README: "`blur` (the default) | blurred and hidden behind a spoiler"; "The bot stores the image as made and
    the checker's verdict with it"."""
    async with running_bot(fake, tmp_path, config(fake)) as bot:
        handle = await fake.slash("imagine", {"prompt": "a red fox --seed 5"}, user="alice")
        result = await handle.wait_original(has_buttons)
        [attachment] = result.attachments
        assert attachment.filename.startswith("SPOILER_imagine_")
        assert "⚠ The image is blurred and hidden behind a spoiler by this server's safety setting." in result.content
        job = await job_of(bot, "a red fox")
        original = await stored_image(bot, job)
        assert blurred_from(decode(result), original)  # what members see
        assert [image.nsfw for image in await bot.services.storage.list_results(job.id)] == [True]


async def test_previews_are_blurred_wherever_the_image_will_be_checked(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "previews of a request whose images are checked are blurred as well"."""
    async with running_bot(fake, tmp_path, config(fake), storage_class=ShownFirstStorage):
        checked = await fake.slash("imagine", {"prompt": "a red fox --seed 5 --steps 4"}, user="alice")
        await checked.wait_original(has_buttons)
        unchecked = await fake.slash("imagine", {"prompt": "a red fox --seed 5 --steps 4"}, channel="after-dark",
                                     user="alice")
        await unchecked.wait_original(has_buttons)
    veiled, clear = previews_of(fake, checked), previews_of(fake, unchecked)
    assert veiled and clear
    # The same picture on its way (same seed): blurred to a near-even tone where it will be checked.
    assert max(preview.std() for preview in veiled) * 3 < min(preview.std() for preview in clear)


def previews_of(fake: FakeDiscord, handle: Any) -> list[np.ndarray]:
    found = [file.data for request in fake.requests if handle.record.token in request.path
             for file in request.files if file.filename == "preview.png"]
    return [pixels(Image.open(io.BytesIO(data))) for data in found]


async def test_spoiler_mode_shows_the_image_as_made_behind_a_spoiler(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "`spoiler` | shown as made, behind a spoiler"."""
    async with running_bot(fake, tmp_path, config(fake, mode="spoiler")) as bot:
        result = await (await fake.slash("imagine", {"prompt": "a cat --seed 2"}, user="alice")) \
            .wait_original(has_buttons)
        assert result.attachments[0].filename.startswith("SPOILER_")
        original = await stored_image(bot, await job_of(bot, "a cat"))
        assert np.array_equal(pixels(decode(result)), pixels(original))
        assert "⚠ The image is hidden behind a spoiler by this server's safety setting." in result.content


async def test_refuse_mode_withholds_flagged_images_and_their_buttons_make_nothing(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    """README: "`refuse` | withheld ... no attachment when every image is withheld"; "in `refuse` mode U and V on a
    withheld image answer privately that it was withheld"."""
    async with running_bot(fake, tmp_path, config(fake, mode="refuse")) as bot:
        result = await (await fake.slash("imagine", {"prompt": "a dune --seed 2 --count 2"}, user="alice")) \
            .wait_original(has_buttons)
        assert result.attachments == []
        assert "🚫 Images 1 and 2 were withheld by this server's safety setting." in result.content
        before = await stored_jobs(bot)
        for label in ("U1", "V2"):
            click = await fake.click(result, button(result, label), user="alice")
            number = label[1]
            assert await private_answer(fake, click) == (
                f"🚫 Image {number} was withheld by this server's safety setting, so it can't be upscaled or varied.")
        assert await stored_jobs(bot) == before
    assert len([message for message in public(fake) if has_buttons(message)]) == 1


async def test_refuse_puts_a_notice_where_only_some_images_are_flagged(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "a plain notice in its place in a grid": the images that passed stay as made."""
    async with running_bot(fake, tmp_path, config(fake, FLAG_NONE)) as bot:
        await (await fake.slash("imagine", {"prompt": "a pond --seed 2 --count 2"}, user="alice")) \
            .wait_original(has_buttons)
        job = await job_of(bot, "a pond")
        first, second = await stored_image(bot, job, 0), await stored_image(bot, job, 1)
        content = ResultContent(job.request, [first, second], job.seeds, 1.0, "", nsfw=(True, False))
        text, [(data, name)] = await result_message(job, content, None, safety="refuse")
        assert "🚫 Image 1 was withheld by this server's safety setting." in text and not name.startswith("SPOILER_")
        grid = Image.open(io.BytesIO(data)).convert("RGB")
        notice, kept = grid.crop((0, 0, 64, 64)), grid.crop((64, 0, 128, 64))
        assert np.array_equal(pixels(kept), pixels(second))
        background = (pixels(notice) == NOTICE_COLOUR).all(axis=2).mean()
        assert background > 0.8 and np.abs(pixels(notice) - pixels(first)).mean() > 30  # a plain tile, one word on it
        _, [(_, blurred_name)] = await result_message(job, content, None, safety="blur")
        assert blurred_name.startswith("SPOILER_")
        text, [(data, name)] = await result_message(job, content, None, safety="off")
        assert not name.startswith("SPOILER_") and "safety" not in text


async def test_an_age_restricted_channel_follows_its_own_setting(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "Channels Discord marks age-restricted follow `nsfw_channel_mode` instead"."""
    async with running_bot(fake, tmp_path, config(fake, mode="refuse")) as bot:
        late = await (await fake.slash("imagine", {"prompt": "a night club --seed 3"}, channel="after-dark",
                                       user="alice")).wait_original(has_buttons)
        [attachment] = late.attachments
        assert not attachment.filename.startswith("SPOILER_") and "safety setting" not in late.content
        original = await stored_image(bot, job := await job_of(bot, "a night club"))
        assert np.array_equal(pixels(decode(late)), pixels(original))
        # With nsfw_channel_mode off the checker does not even run there: nothing is flagged or stored as checked.
        assert [image.nsfw for image in await bot.services.storage.list_results(job.id)] == [None]
        general = await (await fake.slash("imagine", {"prompt": "a night club --seed 3"}, channel="general",
                                          user="alice")).wait_original(has_buttons)
        assert general.attachments == [] and "withheld" in general.content
    async with running_bot(fake, tmp_path, config(fake, mode="off", nsfw_mode="blur")) as bot:
        late = await (await fake.slash("imagine", {"prompt": "a bar --seed 3"}, channel="after-dark",
                                       user="alice")).wait_original(has_buttons)
        assert late.attachments[0].filename.startswith("SPOILER_")
        assert blurred_from(decode(late), await stored_image(bot, await job_of(bot, "a bar")))
        general = await (await fake.slash("imagine", {"prompt": "a pub --seed 3"}, channel="general",
                                          user="alice")).wait_original(has_buttons)
        assert not general.attachments[0].filename.startswith("SPOILER_")


async def test_u_and_v_never_serve_a_flagged_image_clear(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "U and V on a flagged image never show it clear where the mode says otherwise (an upscale or
    variation is checked anew ...)"."""
    async with running_bot(fake, tmp_path, config(fake)) as bot:
        original = await (await fake.slash("imagine", {"prompt": "a red fox --seed 5 --count 2"}, user="alice")) \
            .wait_original(has_buttons)
        for label, kind in (("U2", "Upscaled 2×"), ("V1", "Variations")):
            click = await fake.click(original, button(original, label), user="alice")
            made = await click.wait_original(has_buttons)
            assert kind in made.content and made.attachments[0].filename.startswith("SPOILER_")
            child = next(job for job in await bot.services.storage.jobs_in_states(["done"])
                         if job.kind == ("upscale" if label == "U2" else "variation"))
            shown = decode(made)
            stored = [await stored_image(bot, child, index) for index in range(len(child.seeds))]
            grid = stored[0] if len(stored) == 1 else _grid(stored)
            assert blurred_from(shown, grid)


def _grid(images: list[Image.Image]) -> Image.Image:
    from bot.discord_ui.images import make_grid

    return make_grid(images)


async def test_the_flag_is_stored_and_the_full_size_u_applies_it_after_a_restart(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    """U's full-size answer (the upscale is too large for the model) follows the stored flag: after a restart on a
    checker that flags nothing, the image flagged before is still blurred and a spoiler."""
    small = {"max_width": 64, "max_height": 64, "max_pixels": 64 * 64}
    async with running_bot(fake, tmp_path, config(fake, **small)) as bot:
        original = await (await fake.slash("imagine", {"prompt": "a red fox --seed 5"}, user="alice")) \
            .wait_original(has_buttons)
        job = await job_of(bot, "a red fox")
    async with running_bot(fake, tmp_path, config(fake, FLAG_NONE, **small)) as bot:
        assert [image.nsfw for image in await bot.services.storage.list_results(job.id)] == [True]
        click = await fake.click(original, button(original, "U1"), user="carol")
        reply = await click.wait_original(lambda message: bool(message.attachments))
        assert not reply.ephemeral and "at full size (seed 5)" in reply.content
        assert reply.attachments[0].filename == "SPOILER_image_1.png"
        assert "⚠ The image is blurred and hidden behind a spoiler by this server's safety setting." in reply.content
        assert blurred_from(decode(reply), await stored_image(bot, job))
