"""/mod on the queue and its members, end to end through the fake Discord: pause and resume, cancel (by message
link or job id), purge, ban and unban, and the audit log. Each change is made by a moderator, seen by members,
audited, and survives a restart (a second bot on the same data directory and database)."""

from __future__ import annotations

from pathlib import Path

from bot.app import ImagineBot
from bot.discord_ui.texts import PAUSED_TEXT
from bot.storage import JobRecord
from tests.bot_harness import GateExecutor, WatchedStorage, button, is_result
from tests.fake_discord import FakeDiscord, InteractionHandle, StoredMessage
from tests.moderation_helpers import ART, PHOTO, admitted, audit_rows, bot_on, fake, mod, two_server_config

__all__ = ["fake"]  # the two-server world of tests.moderation_helpers

PAUSED = "⏳ A moderator paused /imagine in this server; try again later."
BANNED = "🚫 You can't use /imagine in this server: a moderator has blocked you from it."


async def ask(fake: FakeDiscord, prompt: str, user: str = "alice", guild: str = ART) -> InteractionHandle:
    return await fake.slash("imagine", {"prompt": prompt}, user=user, guild=guild)


async def answer(handle: InteractionHandle) -> StoredMessage:
    return await handle.wait_original()


async def shown_jobs(bot: ImagineBot, count: int) -> list[JobRecord]:
    """Wait until ``count`` jobs are active with their status messages recorded (what a restart resumes)."""
    storage = bot.services.storage
    assert isinstance(storage, WatchedStorage)

    async def shown() -> list[JobRecord] | None:
        active = await storage.jobs_in_states(["queued", "running"])
        return active if len(active) == count and all(job.status_message_id for job in active) else None

    return await storage.wait_until(shown, what=f"{count} active jobs with their status messages recorded")


def link(fake: FakeDiscord, message: StoredMessage) -> str:
    return f"https://discord.com/channels/{fake.guild(ART).id}/{message.channel_id}/{message.id}"


async def test_pause_and_resume_hold_the_queue_across_restarts(fake: FakeDiscord, tmp_path: Path,
                                                              database_url: str) -> None:
    """README: "queued requests keep their place, new ones are refused; it stays paused across restarts"."""
    config = two_server_config(fake)
    async with bot_on(fake, tmp_path, config, database_url=database_url) as bot:
        running = await ask(fake, "a fox")
        assert admitted(await answer(running))
        await shown_jobs(bot, 1)
        assert (await mod(fake, "pause")).content == (
            "⏸ This server's queue is paused: queued requests wait, new ones are refused. /mod resume starts it again.")
        refused = await answer(await ask(fake, "an owl"))
        assert refused.ephemeral and refused.content == PAUSED
        assert admitted(await answer(await ask(fake, "a crow", guild=PHOTO)))  # the other server runs on
        assert (await mod(fake, "pause")).content == "This server's queue is already paused."
        assert [(row.command, row.before, row.after) for row in await audit_rows(bot)] == [
            ("pause", "running", "paused")]

    gpu = GateExecutor()
    async with bot_on(fake, tmp_path, config, executor=gpu, database_url=database_url) as bot:
        assert (await answer(await ask(fake, "an owl"))).content == PAUSED  # still paused
        # The fox, interrupted by the restart, is back in the queue, and its message says the queue is paused.
        await running.wait_original(lambda message: message.content == PAUSED_TEXT)
        assert (await mod(fake, "resume")).content == "▶ This server's queue runs again."
        gpu.gate.set()
        await running.wait_original(is_result)  # the fox, held since the pause, is made now
        assert [row.command for row in await audit_rows(bot)] == ["pause", "resume"]

    async with bot_on(fake, tmp_path, config, database_url=database_url):
        assert admitted(await answer(await ask(fake, "an owl")))  # resumed for good


async def test_cancel_by_message_link_or_job_id_is_stored_and_stays_cancelled(fake: FakeDiscord, tmp_path: Path,
                                                                              database_url: str) -> None:
    config = two_server_config(fake)
    gpu = GateExecutor()
    async with bot_on(fake, tmp_path, config, executor=gpu, database_url=database_url) as bot:
        running = await ask(fake, "a fox")
        await running.wait_original(lambda message: "Starting" in message.content)  # alice's until the gate opens
        queued = await ask(fake, "an owl", user="carol")
        await queued.wait_original(lambda message: "Queued" in message.content)
        jobs = {job.request.prompt: job for job in await shown_jobs(bot, 2)}
        status = await queued.wait_original()
        reply = await mod(fake, "cancel", {"job": link(fake, status)})
        assert reply.content == f"✅ Cancelled <@{fake.user('carol').id}>'s request; its message says so."
        await queued.wait_original(lambda message: message.content == "✖ Cancelled.")

        reply = await mod(fake, "cancel", {"job": jobs["a fox"].id})  # the running one, by its id
        assert reply.content == f"✅ Cancelled <@{fake.user('alice').id}>'s request; its message says so."
        assert (await mod(fake, "cancel", {"job": jobs["a fox"].id})).content == (
            "That request is being cancelled already; nothing changed.")  # it stops at its next step
        gpu.gate.set()  # the GPU hands the batch back; the cancelled member is dropped
        await running.wait_original(lambda message: message.content == "✖ Cancelled.")
        assert (await mod(fake, "cancel", {"job": jobs["a fox"].id})).content == (
            "That request is no longer waiting or running; it may have finished already.")
        rows = await audit_rows(bot)
        assert [(row.command, row.target, row.subject_id, row.before, row.after) for row in rows] == [
            ("cancel", jobs["an owl"].id, fake.user("carol").id, "queued", "cancelled"),
            ("cancel", jobs["a fox"].id, fake.user("alice").id, "running", "cancelled")]

    gpu = GateExecutor()
    async with bot_on(fake, tmp_path, config, executor=gpu, database_url=database_url) as bot:
        for job in jobs.values():
            assert (await bot.services.storage.require_job(job.id)).status == "cancelled"
        assert bot.services.scheduler.snapshot().total_queued == 0 and gpu.batches == []
        assert len(await audit_rows(bot)) == 2


async def test_purge_cancels_every_request_of_one_member_here(fake: FakeDiscord, tmp_path: Path) -> None:
    config = two_server_config(fake)
    async with bot_on(fake, tmp_path, config) as bot:
        handles = []
        for prompt, user in (("a fox", "alice"), ("an owl", "alice"), ("a cat", "carol")):
            handles.append(await ask(fake, prompt, user=user))
            await handles[-1].wait_original(admitted)  # one at a time: alice's fox runs, the others wait
        await shown_jobs(bot, 3)
        reply = await mod(fake, "purge", {"user": "alice"})
        assert reply.content == f"✅ Cancelled 2 requests of <@{fake.user('alice').id}> in this server."
        await handles[1].wait_original(lambda message: message.content == "✖ Cancelled.")
        [kept] = await bot.services.storage.jobs_in_states(["queued", "running"])
        assert kept.request.prompt == "a cat"
        [row] = await audit_rows(bot)
        assert (row.command, row.subject_id, len(row.before), row.after) == ("purge", fake.user("alice").id, 2,
                                                                            "cancelled")
        assert (await mod(fake, "purge", {"user": "alice"})).content == (
            f"<@{fake.user('alice').id}> has no queued or running requests in this server; nothing changed.")
    async with bot_on(fake, tmp_path, config) as bot:
        assert [entry.job.request.prompt for entry in bot.services.scheduler.snapshot().queued] + [
            job.request.prompt for job in bot.services.scheduler.snapshot().running] == ["a cat"]
        assert len(await audit_rows(bot)) == 1


async def test_a_banned_member_is_refused_privately_until_unbanned(fake: FakeDiscord, tmp_path: Path,
                                                                 database_url: str) -> None:
    """README: "their `/imagine` and the buttons that make images (U, V, 🔄) are refused privately"."""
    config = two_server_config(fake)
    gpu = GateExecutor()
    gpu.gate.set()  # images are made at once
    async with bot_on(fake, tmp_path, config, executor=gpu, database_url=database_url) as bot:
        made = await (await ask(fake, "a fox")).wait_original(is_result)
        reply = await mod(fake, "ban", {"user": "alice"})
        assert reply.content.startswith(f"✅ <@{fake.user('alice').id}> is banned from the bot in this server")
        refused = await answer(await ask(fake, "an owl"))
        assert refused.ephemeral and refused.content == BANNED
        click = await fake.click(made, button(made, "🔄"), user="alice")  # a button that makes images
        refusal = await click.wait_for(lambda message: message.ephemeral and message.content == BANNED)
        assert refusal.content == BANNED
        assert (await answer(await ask(fake, "an owl", guild=PHOTO))).content  # Photo Club: not banned there
        assert (await mod(fake, "ban", {"user": "alice"})).content == (
            f"<@{fake.user('alice').id}> is already banned from the bot here; nothing changed.")
        [row] = await audit_rows(bot)
        assert (row.command, row.subject_id, row.before, row.after) == ("ban", fake.user("alice").id, "not banned",
                                                                        "banned")
    async with bot_on(fake, tmp_path, config, executor=gpu, database_url=database_url) as bot:
        assert (await answer(await ask(fake, "an owl"))).content == BANNED  # still banned after a restart
        reply = await mod(fake, "unban", {"user": "alice"})
        assert reply.content == f"✅ <@{fake.user('alice').id}> may use the bot in this server again."
        await (await ask(fake, "an owl")).wait_original(is_result)
        assert [row.command for row in await audit_rows(bot)] == ["ban", "unban"]
    public_refusals = [message for message in fake.messages if message.content == BANNED and not message.ephemeral]
    assert public_refusals == []


async def test_the_audit_log_is_newest_first_by_member_and_limited(fake: FakeDiscord, tmp_path: Path) -> None:
    config = two_server_config(fake)
    alice, bob, carol = (fake.user(name).id for name in ("alice", "bob", "carol"))
    async with bot_on(fake, tmp_path, config):
        await mod(fake, "ban", {"user": "alice"})
        await mod(fake, "limits set", {"key": "max_queued_per_user", "value": "2"})
        await mod(fake, "unban", {"user": "alice"})
        await mod(fake, "ban", {"user": "carol"})
        assert (await mod(fake, "audit", user="dave", guild=PHOTO)).content == "No /mod changes in this server yet."
    async with bot_on(fake, tmp_path, config):
        lines = (await mod(fake, "audit")).content.splitlines()
        assert lines[0] == "**/mod changes in this server**, newest first:"
        assert [line.split(" · ", 1)[1] for line in lines[1:]] == [
            f"ban <@{carol}>: not banned → banned", f"unban <@{alice}>: banned → not banned",
            "limits set max_queued_per_user: null (no limit) → 2", f"ban <@{alice}>: not banned → banned"]
        assert all(f"<@{bob}> (bob) · " in line for line in lines[1:])
        by_alice = (await mod(fake, "audit", {"user": "alice", "limit": 1})).content.splitlines()
        assert by_alice[0] == f"**/mod changes by or about <@{alice}>**, newest first:"
        assert [line.split(" · ", 1)[1] for line in by_alice[1:]] == [f"unban <@{alice}>: banned → not banned"]
