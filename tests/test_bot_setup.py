"""A new admin's first hour, end to end against the fake Discord: the invite link the bot prints, a start-up
log without warnings, and a channel that withholds a permission the bot needs (README "Set up on Discord")."""

from __future__ import annotations

import logging
from pathlib import Path

import discord
import pytest

from bot.discord_ui.invite import INVITED, NEEDED, invite_url
from tests.bot_harness import is_result, public, running_bot
from tests.fake_discord import FakeChannel, FakeDiscord
from tests.fake_discord.models import (
    ATTACH_FILES,
    CREATE_PUBLIC_THREADS,
    PUBLIC_THREAD,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    VIEW_CHANNEL,
)
from tests.test_bot_process import ROOT, bot_env, bot_process, stop, until_synced

README = ROOT / "README.md"

# Discord's permission bits: View Channel 1<<10, Send Messages 1<<11, Attach Files 1<<15,
# Read Message History 1<<16, Send Messages in Threads 1<<38.
PERMISSIONS = 274878008320
# The privileged intents a bot must switch on in the Developer Portal: Server Members, Presence, Message Content.
PRIVILEGED = (1 << 1) | (1 << 8) | (1 << 15)
GUILDS_INTENT = 1 << 0

NO_ATTACH = ("🚫 The bot can't post images in this channel: it lacks the Attach Files permission here. A server "
             "admin can give the bot View Channel, Send Messages, Attach Files and Read Message History in this "
             "channel; until then, use /imagine in another channel.")


def test_the_invite_link_asks_for_both_scopes_and_exactly_the_needed_permissions() -> None:
    """README: "Invite the bot with the `bot` and `applications.commands` scopes and the permissions *View
    Channel*, *Send Messages*, *Send Messages in Threads*, *Attach Files* and *Read Message History*", and
    *Create Public Threads* for prompt contests' galleries (a channel with /imagine needs only the first five)."""
    assert NEEDED.value == PERMISSIONS == (1 << 10) | (1 << 11) | (1 << 15) | (1 << 16) | (1 << 38)
    assert INVITED.value == PERMISSIONS | CREATE_PUBLIC_THREADS == 309237746688
    assert invite_url(1234567890123) == ("https://discord.com/oauth2/authorize?client_id=1234567890123"
                                         "&scope=bot+applications.commands&permissions=309237746688")
    assert invite_url(42, discord.Permissions(view_channel=True)).endswith("client_id=42&scope=bot+applications"
                                                                          ".commands&permissions=1024")
    assert invite_url(42, 0).endswith("&permissions=0")


def _warnings(records: list[logging.LogRecord]) -> list[str]:
    return [f"{record.levelname} {record.name}: {record.getMessage()}" for record in records
            if record.levelno >= logging.WARNING]


async def test_start_up_logs_no_warning_asks_for_no_privileged_intent_and_prints_the_invite_link(
        fake: FakeDiscord, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11: "a start-up against the fake Discord whose log has no WARNING lines"; README: "It asks Discord
    for one gateway intent, *Guilds*, and no privileged intent", and "near the top of its log is a line like"
    the one it shows. The voice switches are set as a fresh process without PyNaCl and davey has them (an
    earlier test may have spent them)."""
    monkeypatch.setattr(discord.VoiceClient, "warn_nacl", True)
    monkeypatch.setattr(discord.VoiceClient, "warn_dave", True)
    caplog.set_level(logging.INFO)
    async with running_bot(fake, tmp_path) as bot:
        assert bot.services.warmup is not None
        await bot.services.warmup.wait_settled()  # the default model is loaded: start-up is over
        assert fake.gateway is not None and fake.gateway.current is not None
        intents = fake.gateway.current.intents  # what the bot asked for in IDENTIFY
        start_up = list(caplog.records)
    assert _warnings(start_up) == []
    assert intents == GUILDS_INTENT and not intents & PRIVILEGED
    invite = invite_url(fake.state.application_id)
    said = [record.getMessage() for record in start_up if invite in record.getMessage()]
    shown = next(line.strip() for line in README.read_text().splitlines() if line.strip().startswith("invite link"))
    assert said == [shown.replace("<application id>", str(fake.state.application_id))]


async def test_python_m_bot_starts_without_a_warning_line(fake: FakeDiscord, tmp_path: Path) -> None:
    """The same for the process an admin runs (a fresh interpreter: discord.py's voice notes, transformers'
    torchvision note and the intent warning each had a line here before)."""
    log_path = tmp_path / "bot.log"
    env = bot_env(tmp_path, **fake.env, IMAGINE_LOG_LEVEL="INFO")
    env.pop("TRANSFORMERS_VERBOSITY", None)  # as an admin's shell has it
    async with bot_process(env, log_path) as process:
        await until_synced(fake, process, log_path, "imagine")
        # A first /imagine runs after the model is loaded: the whole start-up has been logged by then.
        handle = await fake.slash("imagine", {"prompt": "a fox"}, user="alice")
        await handle.wait_original(is_result)
        code = await stop(process)
    text = log_path.read_text()
    assert code == 0, text
    problems = [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line
                or not line[:4].isdigit()]  # a line without a timestamp: a print or a traceback
    assert problems == [], text
    assert "invite link (scopes bot and applications.commands; " in text
    assert invite_url(fake.state.application_id) in text


def _deny(channel: FakeChannel, permission: int) -> None:
    channel.bot_permissions = (VIEW_CHANNEL | SEND_MESSAGES | SEND_MESSAGES_IN_THREADS | ATTACH_FILES
                               | READ_MESSAGE_HISTORY) & ~permission


async def test_a_channel_without_attach_files_refuses_imagine_privately_and_the_log_says_so_once_per_server(
        fake: FakeDiscord, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """README: "Where a channel withholds a permission the bot needs ..., `/imagine` there answers the member
    privately, saying what is missing, and the log says it once per server, with the invite link." Nothing is
    stored or run for the refused requests; other channels work."""
    _deny(fake.channel("imagine"), ATTACH_FILES)
    caplog.set_level(logging.INFO)
    async with running_bot(fake, tmp_path) as bot:
        for user in ("alice", "carol"):
            handle = await fake.slash("imagine", {"prompt": "a fox"}, user=user, channel="imagine")
            reply = await handle.wait_original()
            assert reply.ephemeral and reply.content == NO_ATTACH
        assert await bot.services.storage.jobs_in_states(["queued", "running", "done", "refused"]) == []
        elsewhere = await fake.slash("imagine", {"prompt": "an owl"}, user="alice", channel="general")
        assert "an owl" in (await elsewhere.wait_original(is_result)).content
    said = _warnings(caplog.records)
    guild, channel = fake.guild(), fake.channel("imagine")
    assert said == [
        f"WARNING bot.discord_ui.channel_access: server Art Club (id {guild.id}): the bot lacks Attach Files in "
        f"channel #imagine (id {channel.id}), so /imagine is refused there; a server admin should allow the bot "
        "View Channel, Send Messages, Attach Files, Read Message History in that channel (Edit Channel > "
        f"Permissions), or add it again with {invite_url(fake.state.application_id)} to grant them server-wide "
        "(said once per server)"]
    assert [message.channel_id for message in public(fake)] == [fake.channel("general").id]


async def test_in_a_thread_the_bot_needs_send_messages_in_threads_not_send_messages(fake: FakeDiscord,
                                                                                  tmp_path: Path) -> None:
    """A thread is posted to with Send Messages in Threads: a thread that grants it (and withholds Send Messages)
    works; one that withholds it is refused, naming it."""
    guild = fake.guild()
    parent = fake.channel("general")
    threads = {name: FakeChannel(name, type=PUBLIC_THREAD, parent_id=parent.id, guild_id=guild.id)
               for name in ("open-thread", "closed-thread")}
    guild.channels.extend(threads.values())  # before the bot connects: GUILD_CREATE lists them
    _deny(threads["open-thread"], SEND_MESSAGES)
    _deny(threads["closed-thread"], SEND_MESSAGES_IN_THREADS)
    async with running_bot(fake, tmp_path):
        refused = await (await fake.slash("imagine", {"prompt": "a fox"}, user="alice",
                                          channel="closed-thread")).wait_original()
        assert refused.ephemeral and "it lacks the Send Messages in Threads permission here" in refused.content
        served = await fake.slash("imagine", {"prompt": "an owl"}, user="alice", channel="open-thread")
        assert "an owl" in (await served.wait_original(is_result)).content
