"""/mod settings end to end through the fake Discord: limits, channels, blocklist and safety. Each change is
made by a moderator, takes effect for the next request, is audited, and survives a restart (a second bot on
the same data directory and database) and a reload of config.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.app import ImagineBot
from bot.core.config import GuildConfig, load_config
from bot.core.config_store import ConfigStore
from bot.core.policy import ContentConfig, ContentRule
from bot.storage import Storage
from generation.errors import ConfigError
from tests.fake_discord import FakeChannel, FakeDiscord, StoredMessage
from tests.fake_discord.models import PUBLIC_THREAD
from tests.moderation_helpers import ART, PHOTO, admitted, audit_rows, bot_on, fake, mod, role_id, two_server_config

__all__ = ["fake"]  # the two-server world of tests.moderation_helpers

QUOTA_REFUSAL = "⏳ You have used your 0 daily images. They reset at 00:00 UTC"  # what a member reads


async def imagine(fake: FakeDiscord, user: str = "alice", **where: Any) -> StoredMessage:
    handle = await fake.slash("imagine", {"prompt": "a fox"}, user=user, **where)
    return await handle.wait_original()


def art_guild(bot: ImagineBot, fake: FakeDiscord) -> GuildConfig:
    return bot.services.config.current.guilds[fake.guild(ART).id]


async def test_limits_set_show_and_reset_take_effect_are_audited_and_survive_a_restart(
        fake: FakeDiscord, tmp_path: Path, database_url: str) -> None:
    """README: "They take effect for the next request, survive restarts" and `/mod limits show` says "where its
    value comes from". On SQLite and PostgreSQL (``database_url``)."""
    config = two_server_config(fake)
    patron = role_id(fake, ART, "Patron")
    async with bot_on(fake, tmp_path, config, database_url=database_url) as bot:
        answer = await mod(fake, "limits set", {"key": "daily_images_per_user", "value": "0"})
        assert answer.content == ("✅ `daily_images_per_user`: null (no limit) → 0. From the next request; logged "
                                  "in /mod audit.")
        assert (await imagine(fake)).content.startswith(QUOTA_REFUSAL)  # the very next request
        assert (await mod(fake, "limits set", {"key": "daily_images_per_user", "value": "0"})).content == (
            "That is this server's setting already; nothing changed.")  # and not logged either
        answer = await mod(fake, "limits set", {"key": "user_rate", "value": "2/1m burst 1", "role": "Patron"})
        assert answer.content.startswith(f"✅ `user_rate` for <@&{patron}>: null (no limit) → 2 requests/60s burst 1.")
        [first, second] = await audit_rows(bot)
        assert (first.actor_name, first.command, first.target, first.before, first.after) == (
            "bob", "limits set", "daily_images_per_user", None, 0)
        assert first.actor_id == fake.user("bob").id and first.guild_id == fake.guild(ART).id
        assert (second.target, second.after) == (f"user_rate for <@&{patron}>",
                                                 {"unit": "requests", "amount": 2.0, "window_s": 60.0, "burst": 1.0})

    async with bot_on(fake, tmp_path, config, database_url=database_url) as bot:
        assert (await imagine(fake)).content.startswith(QUOTA_REFUSAL)  # still in force after the restart
        shown = (await mod(fake, "limits show", {"role": "Patron"})).content
        assert "`daily_images_per_user`: 0 · server override (set by /mod)" in shown
        assert f"`user_rate`: 2 requests/60s burst 1 · role override <@&{patron}> (set by /mod)" in shown
        assert "`quota_timezone`: UTC · config.yaml default" in shown
        answer = await mod(fake, "limits reset", {"key": "daily_images_per_user"})
        assert answer.content.startswith("✅ `daily_images_per_user` follows config.yaml again: 0 → null (no limit).")
        assert admitted(await imagine(fake))
        assert [row.command for row in await audit_rows(bot)] == ["limits set", "limits set", "limits reset"]
        assert bot.services.config.overrides(fake.guild(ART).id) == {
            "roles": {str(patron): {"user_rate": {"unit": "requests", "amount": 2, "window_s": 60.0, "burst": 1}}}}
        assert bot.services.config.overrides(fake.guild(PHOTO).id) == {}  # the other server is untouched


async def test_an_invalid_limit_gets_the_files_message_and_changes_nothing(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "A value is checked by the same rules as the file and refused with the same message, naming the key
    as the file would" (config.yaml's message for the same value, less its line number)."""
    art = fake.guild(ART).id
    file = tmp_path / "config.yaml"
    answers = []
    async with bot_on(fake, tmp_path / "data", two_server_config(fake)) as bot:
        for key, typed, written in (("max_queued_per_user", "200000", "200000"),
                                    ("user_rate", "6/0s", "{amount: 6, window_s: 0}"),
                                    ("quota_timezone", "Mars/Olympus", "Mars/Olympus"),
                                    ("no_such_limit", "3", "3")):
            file.write_text(f'guilds:\n  "{art}":\n    limits:\n      {key}: {written}\n')
            with pytest.raises(ConfigError) as from_file:
                load_config(file)
            # "<file>: invalid configuration: guilds.<id>.limits.<key> (line 4): <what is wrong>; allowed: <...>"
            expected = str(from_file.value).replace(" (line 4)", "").split(": invalid configuration: ")[1]
            answer = await mod(fake, "limits set", {"key": key, "value": typed})
            assert answer.content == f"Not changed: /mod: invalid configuration: {expected}"
            answers.append(answer.content)
        assert await audit_rows(bot) == [] and bot.services.config.overrides(art) == {}
    assert answers[0].endswith(f"guilds.{art}.limits.max_queued_per_user: 200000 is out of range; allowed: 0 to 100000")
    assert answers[1].endswith(".limits.user_rate.window_s: 0 is out of range; allowed: 1 to 2592000 s (30 days)")


async def test_a_stored_override_survives_a_reload_of_the_file(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "[/mod settings] are laid over the file again at every reload"; `/mod reload` answers "the file's
    error and `the running config stays`" when the file is broken."""
    art = fake.guild(ART).id
    path = tmp_path / "config.yaml"
    base = ("models:\n  default: tiny\n  tiny: {source: 'builtin:tiny', default_steps: 2, default_width: 64, "
            "default_height: 64}\nexecutor: {device: cpu}\nlimits: {user_rate: null, guild_rate: null, "
            "daily_images_per_user: null, max_queued_per_user: %d}\n"
            f'guilds:\n  "{art}": {{moderator_roles: [{role_id(fake, ART, "Moderator")}]}}\n')
    path.write_text(base % 3)
    async with bot_on(fake, tmp_path / "data", ConfigStore(path)) as bot:
        await mod(fake, "limits set", {"key": "daily_images_per_user", "value": "0"})
        path.write_text(base % 7)
        answer = await mod(fake, "reload")
        assert answer.content == "✅ config.yaml reloaded; this server's /mod settings apply on top of it."
        running = bot.services.config.current
        shown = (await mod(fake, "limits show")).content
        assert "`max_queued_per_user`: 7 · config.yaml default" in shown  # the file's change is in
        assert "`daily_images_per_user`: 0 · server override (set by /mod)" in shown  # and so is the override
        assert (await imagine(fake)).content.startswith(QUOTA_REFUSAL)

        path.write_text(base % 7 + "scheduler: {batch_window_ms: -1}\n")
        answer = await mod(fake, "reload")
        assert answer.content == ("config.yaml was not reloaded; the running config stays. config.yaml: invalid "
                                  "configuration: scheduler.batch_window_ms (line 8): -1 is out of range; allowed: "
                                  "0 to 5000 ms")  # the file's name only: where the operator keeps it stays theirs
        assert bot.services.config.current is running
        assert [(row.command, row.after) for row in await audit_rows(bot)][1:] == [
            ("reload", "reloaded"), ("reload", f"rejected: {answer.content.split('stays. ')[1]}")]

    path.write_text(base % 8)  # fixed while the bot was down: the next start reads it, the override on top
    async with bot_on(fake, tmp_path / "data", ConfigStore(path)) as bot:
        shown = (await mod(fake, "limits show")).content
        assert "`max_queued_per_user`: 8 · config.yaml default" in shown
        assert "`daily_images_per_user`: 0 · server override (set by /mod)" in shown
        assert [row.command for row in await audit_rows(bot)] == ["limits set", "reload", "reload"]


async def test_stored_settings_that_no_longer_validate_are_skipped_and_logged(
        fake: FakeDiscord, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """README: "a stored setting that no longer fits the file (after an upgrade, say) is skipped with an error in the
    log, and `/mod limits show` says so." Here a key this version does not know, stored by another."""
    art = fake.guild(ART).id
    async with Storage(tmp_path) as storage:
        await storage.set_guild_settings(art, {"limits": {"daily_images_per_user": 0, "retired_key": 1}})
    async with bot_on(fake, tmp_path, two_server_config(fake)) as bot:
        assert admitted(await imagine(fake))  # the file's values: no daily limit
        shown = (await mod(fake, "limits show")).content
        assert "don't fit config.yaml now and are skipped" in shown and f"guilds.{art}.limits.retired_key" in shown
        assert bot.services.config.skipped_overrides.keys() == {art}
    assert f"stored /mod settings of server {art}: invalid configuration" in caplog.text


async def test_channels_allow_deny_list_survive_a_restart(fake: FakeDiscord, tmp_path: Path,
                                                          database_url: str) -> None:
    """README: "`/mod channels allow [channel]` / `deny [channel]` / `list`: edits the channel allow-list ...
    without a channel, the one it is run in; a thread counts as its channel"."""
    imagine_channel, general = fake.channel("imagine").id, fake.channel("general").id
    art = fake.guild(ART)
    ideas = FakeChannel("fox ideas", type=PUBLIC_THREAD, parent_id=imagine_channel, guild_id=art.id)
    art.channels.append(ideas)  # before the bot connects: GUILD_CREATE lists it
    config = two_server_config(fake)
    async with bot_on(fake, tmp_path, config, database_url=database_url) as bot:
        assert (await mod(fake, "channels list")).content == (
            "/imagine works in every channel of this server (the allow-list is empty).")
        answer = await mod(fake, "channels allow", {"channel": ideas})  # a thread: its channel is allowed
        assert answer.content == (f"✅ /imagine now works in <#{imagine_channel}> and its threads. Allowed now: "
                                  f"<#{imagine_channel}>. From the next request; logged in /mod audit.")
        assert (await imagine(fake, channel="general")).content.startswith("🚫 /imagine isn't enabled in this channel")
        assert admitted(await imagine(fake, channel=ideas))
        [row] = await audit_rows(bot)
        assert (row.command, row.target, row.before, row.after) == ("channels allow", f"<#{imagine_channel}>", [],
                                                                    [imagine_channel])
    async with bot_on(fake, tmp_path, config, database_url=database_url) as bot:
        assert (await mod(fake, "channels list")).content == (
            f"/imagine works in <#{imagine_channel}> and their threads (set by /mod).")
        assert (await imagine(fake, channel="general")).content.startswith("🚫")
        assert admitted(await imagine(fake, channel="imagine"))
        # With no channel named, the channel it is run in is the one meant.
        answer = await mod(fake, "channels deny", channel="general")
        assert answer.content == f"<#{general}> is not on this server's list; nothing changed."
        answer = await mod(fake, "channels deny", channel=ideas)  # run in the thread: its channel is meant
        assert answer.content.startswith(f"✅ <#{imagine_channel}> is off the list. The list is empty now")
        assert [row.command for row in await audit_rows(bot)] == ["channels allow", "channels deny"]
        assert art_guild(bot, fake).channels == []
        assert admitted(await imagine(fake, channel="general"))


async def test_blocklist_add_remove_list_are_private_and_survive_a_restart(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "lists the rules and their terms (to moderators only)"; "Every answer is private"."""
    bot_wide = ContentConfig(rules=[ContentRule(id="spam", words=["buy now"])])
    art_file = GuildConfig(content=ContentConfig(rules=[ContentRule(id="gore", words=["blood"])]))
    config = two_server_config(fake, content=bot_wide, art=art_file)
    async with bot_on(fake, tmp_path, config) as bot:
        answer = await mod(fake, "blocklist add", {"rule": "gore", "term": "Blood Bath"})
        assert answer.content == ("✅ Added to rule `gore`; it has 2 terms now. From the next request; logged in "
                                  "/mod audit.")
        answer = await mod(fake, "blocklist add", {"rule": "brands", "term": "acme"})
        assert answer.content.startswith("✅ Added to rule `brands`; it has 1 term now.")
        assert (await mod(fake, "blocklist add", {"rule": "gore", "term": "blood"})).content == (
            "rule gore already has that term; nothing changed.")
        rows = await audit_rows(bot)
        assert [(row.target, row.before, row.after) for row in rows] == [
            ("gore", ["blood"], ["blood", "Blood Bath"]), ("brands", [], ["acme"])]
    async with bot_on(fake, tmp_path, config) as bot:
        listed = (await mod(fake, "blocklist list")).content
        assert listed == ("**This server's rules** (/mod blocklist add and remove):\n`gore`: blood, Blood Bath\n"
                          "`brands`: acme\n**Every server's rules** (config.yaml, the bot's operator):\n"
                          "`spam`: buy now")
        assert (await mod(fake, "blocklist remove", {"rule": "spam", "term": "buy now"})).content.startswith(
            "that term is in rule spam of every server (config.yaml's content.rules)")
        answer = await mod(fake, "blocklist remove", {"rule": "gore", "term": "blood bath"})
        assert answer.content.startswith("✅ Removed from rule `gore`; it has 1 term now.")
        await mod(fake, "blocklist remove", {"rule": "brands", "term": "acme"})
        rules = art_guild(bot, fake).content.rules
        assert [(rule.id, rule.words) for rule in rules] == [("gore", ["blood"])]  # brands went with its last term
        choices = await fake.autocomplete("mod blocklist remove", "rule", {"rule": ""}, user="bob")
        assert [choice["value"] for choice in choices] == ["gore"]
        terms = await fake.autocomplete("mod blocklist remove", "term", {"rule": "gore", "term": ""}, user="bob")
        assert [choice["value"] for choice in terms] == ["blood"]
        assert len(await audit_rows(bot)) == 4
    # Nothing about the rules was ever said in public.
    assert all(message.ephemeral for message in fake.messages if "gore" in message.content)


async def test_safety_shows_and_sets_this_servers_modes(fake: FakeDiscord, tmp_path: Path) -> None:
    config = two_server_config(fake)
    async with bot_on(fake, tmp_path, config) as bot:
        shown = (await mod(fake, "safety")).content
        assert "`mode`: blur · config.yaml default" in shown
        assert "`nsfw_channel_mode`: off · config.yaml default" in shown
        answer = await mod(fake, "safety", {"mode": "refuse", "nsfw_channel_mode": "spoiler"})
        assert answer.content.startswith("✅ `safety.mode`: blur → refuse. From the next request; logged in /mod "
                                         "audit.\n✅ `safety.nsfw_channel_mode`: off → spoiler.")
        assert art_guild(bot, fake).safety.mode == "refuse"
    async with bot_on(fake, tmp_path, config) as bot:
        shown = (await mod(fake, "safety")).content
        assert "`mode`: refuse · server override (set by /mod)" in shown
        answer = await mod(fake, "safety", {"mode": "default"})
        assert answer.content.startswith("✅ `safety.mode`: refuse → blur.")
        assert art_guild(bot, fake).safety.mode is None  # config.yaml's default applies again
        assert [(row.command, row.target) for row in await audit_rows(bot)] == [
            ("safety", "mode"), ("safety", "nsfw_channel_mode"), ("safety", "mode")]

