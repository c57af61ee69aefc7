"""Who may use /mod, end to end through the fake Discord: every command refuses a member, and a moderator of
another server, privately and without changing anything; a moderator of Photo Club acting there never reaches
Art Club. The fake delivers /mod to anyone (Discord's own gate, default_member_permissions, can be opened to
more roles per server), so these are the bot's own checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.app import ImagineBot
from bot.storage import JobRecord
from tests.bot_harness import WatchedStorage
from tests.fake_discord import FakeDiscord
from tests.moderation_helpers import (
    ART,
    NOT_A_MODERATOR,
    PHOTO,
    admitted,
    audit_rows,
    bot_on,
    fake,
    mod,
    two_server_config,
)

__all__ = ["fake"]  # the two-server world of tests.moderation_helpers


def every_command(job: JobRecord, job_link: str) -> list[tuple[str, dict[str, Any]]]:
    """Each /mod command with options that would change something (or show something) in Art Club."""
    return [
        ("limits show", {}), ("limits show", {"user": "alice"}),
        ("limits set", {"key": "daily_images_per_user", "value": "0"}),
        ("limits reset", {"key": "daily_images_per_user"}),
        ("channels allow", {"channel": "imagine"}), ("channels deny", {"channel": "general"}), ("channels list", {}),
        ("blocklist add", {"rule": "gore", "term": "blood"}), ("blocklist remove", {"rule": "gore", "term": "blood"}),
        ("blocklist list", {}), ("safety", {"mode": "refuse"}), ("safety", {}), ("pause", {}), ("resume", {}),
        ("cancel", {"job": job_link}), ("cancel", {"job": job.id}), ("purge", {"user": "alice"}),
        ("ban", {"user": "alice"}), ("unban", {"user": "alice"}), ("reload", {}), ("audit", {}),
    ]


async def alices_job(fake: FakeDiscord, bot: ImagineBot) -> tuple[JobRecord, str]:
    handle = await fake.slash("imagine", {"prompt": "a fox"}, user="alice", guild=ART)
    status = await handle.wait_original(admitted)
    storage = bot.services.storage
    assert isinstance(storage, WatchedStorage)

    async def shown() -> JobRecord | None:
        [job] = await storage.jobs_in_states(["queued", "running"])
        return job if job.status_message_id else None

    job = await storage.wait_until(shown, what="alice's job with its status message recorded")
    return job, f"https://discord.com/channels/{fake.guild(ART).id}/{status.channel_id}/{status.id}"


async def nothing_changed_in_art(fake: FakeDiscord, bot: ImagineBot, job: JobRecord) -> None:
    """Art Club as it was: no stored settings, nothing audited, its queue running, alice's job still active."""
    art = fake.guild(ART).id
    assert bot.services.config.overrides(art) == {}
    assert await audit_rows(bot, art) == []
    assert not bot.services.scheduler.is_paused(art)
    assert (await bot.services.storage.require_job(job.id)).status in ("queued", "running")
    assert admitted(await (await fake.slash("imagine", {"prompt": "an owl"}, user="alice",
                                            guild=ART)).wait_original())


async def test_members_and_other_servers_moderators_are_refused_every_command(fake: FakeDiscord,
                                                                             tmp_path: Path) -> None:
    """README: "The bot checks every call itself: anyone else gets a private refusal and nothing changes"."""
    async with bot_on(fake, tmp_path, two_server_config(fake)) as bot:
        job, job_link = await alices_job(fake, bot)
        # carol is a member of Art Club; dave moderates Photo Club and is a member of Art Club.
        for who in ("carol", "dave"):
            for command, options in every_command(job, job_link):
                refusal = await mod(fake, command, options, user=who, guild=ART)
                assert refusal.content == NOT_A_MODERATOR, (who, command)
        await nothing_changed_in_art(fake, bot, job)
        # Autocomplete answers moderators only: no rule id, term or limit reaches anyone else.
        for name, option, options in (("mod blocklist remove", "rule", {"rule": ""}),
                                      ("mod blocklist remove", "term", {"rule": "gore", "term": ""}),
                                      ("mod limits set", "key", {"key": ""})):
            assert await fake.autocomplete(name, option, options, user="carol") == []
        assert await fake.autocomplete("mod limits set", "key", {"key": "daily"}, user="bob") != []
        # Outside a server /mod has nothing to act on.
        dm = await (await fake.slash("mod pause", {}, user="bob", dm=True)).wait_original()
        assert dm.ephemeral and dm.content.startswith("🚫 /mod works in servers only")
        # Discord's own gate: the group is hidden from members without Manage Server, and absent from DMs.
        [group] = [command for command in fake.commands() if command["name"] == "mod"]
        assert group["default_member_permissions"] == str(1 << 5) and group["contexts"] == [0]
        # Manage Server is a moderator too: the owner has every permission, no moderator role.
        assert (await mod(fake, "channels list", user="olive")).content.startswith("/imagine works in every channel")
    assert all(message.ephemeral for message in fake.messages if "/mod" in message.content)


async def test_a_moderator_of_another_server_acts_on_that_server_only(fake: FakeDiscord, tmp_path: Path) -> None:
    """README: "every command acts on the server it is run in, never on another (a moderator of one server
    cancelling another server's request is told no such request exists)"."""
    async with bot_on(fake, tmp_path, two_server_config(fake)) as bot:
        job, job_link = await alices_job(fake, bot)
        photo = {"user": "dave", "guild": PHOTO}
        assert (await mod(fake, "ban", {"user": "alice"}, **photo)).content.startswith("✅")
        assert (await mod(fake, "pause", **photo)).content.startswith("⏸")
        assert (await mod(fake, "limits set", {"key": "daily_images_per_user", "value": "0"}, **photo)).content
        assert (await mod(fake, "blocklist add", {"rule": "gore", "term": "blood"}, **photo)).content
        no_job = ("No request of this server matches that. Give the job's id or the link to its message (right-click "
                  "the message → Copy Message Link).")
        assert (await mod(fake, "cancel", {"job": job_link}, **photo)).content == no_job
        assert (await mod(fake, "cancel", {"job": job.id}, **photo)).content == no_job
        assert (await mod(fake, "purge", {"user": "alice"}, **photo)).content == (
            f"<@{fake.user('alice').id}> has no queued or running requests in this server; nothing changed.")
        assert "No /mod changes" not in (await mod(fake, "audit", **photo)).content
        await nothing_changed_in_art(fake, bot, job)
        # Photo Club itself changed: its own settings, log and queue.
        photo_id = fake.guild(PHOTO).id
        assert bot.services.config.current.guilds[photo_id].banned_users == [fake.user("alice").id]
        assert bot.services.scheduler.is_paused(photo_id)
        assert [row.command for row in await audit_rows(bot, photo_id)] == ["ban", "pause", "limits set",
                                                                            "blocklist add"]
