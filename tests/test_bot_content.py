"""Content rules end to end: a blocked prompt is refused privately, naming the rule and nothing of the term,
before anything is stored or downloaded; follow-ups are checked again under today's rules; the default negative
prompt and the prompt length limit; matches counted and logged without the prompt."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from bot.app import ImagineBot
from bot.core.config import GuildConfig
from bot.core.config_store import ConfigStore
from bot.core.policy import ContentConfig, ContentRule
from bot.storage import JOB_STATUSES
from tests.bot_harness import button, is_result, png, public, running_bot, tiny_app_config
from tests.fake_discord import FakeDiscord
from tests.fake_discord.interactions import InteractionHandle

pytest_plugins = ["tests.bot_harness"]

GORE = ContentRule(id="gore", words=["gore", "blood bath"], patterns=[r"dis+membered"])
FOX = ContentRule(id="no-foxes", words=["fox"])


def with_rules(fake: FakeDiscord, *, defaults: ContentConfig | None = None,
               guild: ContentConfig | None = None) -> Any:
    moderator = fake.guild().role("Moderator")
    assert moderator is not None
    guilds = {fake.guild().id: GuildConfig(moderator_roles=[moderator.id], content=guild or ContentConfig())}
    return tiny_app_config(fake, content=defaults or ContentConfig(), guilds=guilds)


async def private_answer(fake: FakeDiscord, handle: InteractionHandle) -> str:
    """The text of the ephemeral answer to ``handle``: its original message, or (after a public "thinking…" defer
    the bot deleted) the private followup, as Discord received it."""
    def sent() -> str | None:
        original = handle.original
        if original is not None and original.ephemeral:
            return original.content
        for request in fake.requests:
            if request.method == "POST" and request.path.endswith(handle.record.token) and request.json:
                assert request.json.get("flags", 0) & 64, request.json  # ephemeral
                return str(request.json["content"])
        return None

    return await fake.wait_until(sent, what="the private answer")


async def stored_jobs(bot: ImagineBot) -> int:
    return len(await bot.services.storage.jobs_in_states(JOB_STATUSES))


DISGUISES = ["GORE everywhere", "a g o r e scene", "g.o.r.e", "ｇｏｒｅ", "g\u200bo\u200dr\u2060e", "gоrе",
             "g0r3 and more", "so much gooore", "a blood-bath", "dissssmembered knight"]


async def test_a_blocked_prompt_is_refused_privately_naming_the_rule_and_nothing_is_stored(
    fake: FakeDiscord, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """README: "A member whose prompt breaks a rule gets a private answer naming the rule by its id and never the
    term ... Nothing is posted in the channel"; "checked before anything is stored or an attached image is
    downloaded"; "Each refusal is counted per server and rule, and logged with the rule, the server and the
    member, never the prompt"."""
    caplog.set_level(logging.INFO, logger="bot.features.imagine.gate")
    async with running_bot(fake, tmp_path, with_rules(fake, defaults=ContentConfig(rules=[GORE]))) as bot:
        for prompt in DISGUISES:
            handle = await fake.slash("imagine", {"prompt": prompt}, user="alice")
            reply = await handle.wait_original()
            assert reply.ephemeral, prompt
            assert reply.content == ("🚫 This prompt matches this server's content rule “gore”. Rephrase it and "
                                     "try again."), prompt
        # The negative prompt is checked too, as an option and as a --no flag.
        negative = await fake.slash("imagine", {"prompt": "a castle", "negative": "gore"}, user="alice")
        assert "This negative prompt matches this server's content rule “gore”" in \
            (await negative.wait_original()).content
        flagged = await fake.slash("imagine", {"prompt": "a castle --no blood bath"}, user="alice")
        assert "content rule “gore”" in (await flagged.wait_original()).content
        # With an attachment: refused before the download, so the picture never left Discord.
        upload = fake.serve_attachment(png(), "sketch.png")
        attached = await fake.slash("imagine", {"prompt": "gore"}, attachments={"image": upload}, user="alice")
        assert (await attached.wait_original()).ephemeral
        assert fake.downloads == []
        assert await stored_jobs(bot) == 0
        alice = fake.user("alice").id
        assert bot.services.content_stats.counts() == {(fake.guild().id, "gore"): len(DISGUISES) + 3}
    assert public(fake) == []
    # No reply, public or private, repeats any part of a term: the rule's id is all that is named.
    for message in fake.messages:
        assert not {"blood", "bath", "dismembered", "g o r e"} & set(message.content.split()), message.content
    lines = [record.getMessage() for record in caplog.records if record.name == "bot.features.imagine.gate"]
    assert len(lines) == len(DISGUISES) + 3
    assert all(f"content rule gore refused a request: guild {fake.guild().id}, user {alice}" == line
               for line in lines)
    assert not any("scene" in record.getMessage() or "castle" in record.getMessage() for record in caplog.records)


async def test_innocent_words_run(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: 'Words match whole words only, so a rule with "ass" never refuses "class".'"""
    config = with_rules(fake, defaults=ContentConfig(rules=[ContentRule(id="rude", words=["ass"])]))
    async with running_bot(fake, tmp_path, config) as bot:
        handle = await fake.slash("imagine", {"prompt": "a glass of bass in class --seed 3"}, user="alice")
        result = await handle.wait_original(is_result)
        assert "a glass of bass in class" in result.content
        assert bot.services.content_stats.counts() == {}


async def test_a_servers_rules_add_to_the_defaults_and_its_length_limit_and_negative_replace_them(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    """README: "A server's rules are added to the default rules"; "`default_negative` is added to every request's
    negative prompt (once, comma-joined), and `max_prompt_chars` refuses longer prompts (flags don't count)"."""
    config = with_rules(fake, defaults=ContentConfig(rules=[GORE], default_negative="text", max_prompt_chars=500),
                        guild=ContentConfig(rules=[FOX], default_negative="blurry, nsfw", max_prompt_chars=30))
    async with running_bot(fake, tmp_path, config) as bot:
        for prompt, rule in (("a gore scene", "gore"), ("a f o x", "no-foxes")):
            reply = await (await fake.slash("imagine", {"prompt": prompt}, user="alice")).wait_original()
            assert reply.ephemeral and f"content rule “{rule}”" in reply.content
        long = "a castle on a hill at dawn, oil painting"  # 40 characters; flags do not count
        reply = await (await fake.slash("imagine", {"prompt": f"{long} --seed 4"}, user="alice")).wait_original()
        assert reply.ephemeral and reply.content == ("🚫 This prompt is 40 characters long; this server allows at "
                                                     "most 30. Shorten it and try again.")
        assert await stored_jobs(bot) == 0
        # The server's default negative prompt is added to what the member wrote, once.
        handle = await fake.slash("imagine", {"prompt": "a castle --seed 4", "negative": "fog, nsfw"}, user="alice")
        result = await handle.wait_original(is_result)
        assert "\nNegative: fog, nsfw, blurry\n" in result.content
        [stored] = await bot.services.storage.jobs_in_states(["done"])
        assert stored.request.negative_prompt == "fog, nsfw, blurry"


async def test_follow_ups_are_checked_again_under_todays_rules(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "🔄, U and V check the original prompt again under the rules of the day"."""
    store = ConfigStore(initial=with_rules(fake, defaults=ContentConfig(default_negative="nude")))
    async with running_bot(fake, tmp_path, store) as bot:
        original = await (await fake.slash("imagine", {"prompt": "a red fox --seed 5"}, user="alice")) \
            .wait_original(is_result)
        # A follow-up of a clean request passes, though the default negative ("nude") is in a rule of its own.
        nudity = ContentRule(id="nudity", words=["nude"])
        store.replace(with_rules(fake, defaults=ContentConfig(rules=[nudity], default_negative="nude")))
        reroll = await fake.click(original, button(original, "🔄"), user="alice")
        rerolled = await reroll.wait_original(is_result)
        assert "Negative: nude\n" in rerolled.content  # added once, not twice
        # A moderator then blocks foxes: no button makes anything more of the fox.
        store.replace(with_rules(fake, guild=ContentConfig(rules=[FOX])))
        before = await stored_jobs(bot)
        for label in ("🔄", "U1", "V1"):
            click = await fake.click(original, button(original, label), user="alice")
            text = await private_answer(fake, click)
            assert text == "🚫 This prompt matches this server's content rule “no-foxes”. Rephrase it and try again."
        assert await stored_jobs(bot) == before
        assert bot.services.content_stats.counts() == {(fake.guild().id, "no-foxes"): 3}
    assert len([message for message in public(fake) if is_result(message)]) == 2
