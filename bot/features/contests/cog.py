"""/contest and the contest buttons. Thin: read the interaction, call the contests service, answer privately.

Every answer here is ephemeral: what the whole channel reads (the announcement, the gallery, the results)
is owed by the round in the database and sent by the poster, never posted from a command directly.
Errors raise from the ``bot.core.errors`` tree; the app's handler (``discord_ui/replies.py``) answers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.config_store import ConfigStore
from bot.core.errors import ContestProblem
from bot.core.identity import Requester
from bot.discord_ui.interactions import NO_MENTIONS, requester_of
from bot.discord_ui.replies import error_text, reply_error
from bot.features.contests import refusals, texts
from bot.features.contests.custom_ids import Action
from bot.features.contests.delivery import PrivateDelivery
from bot.features.contests.phases import PhaseLoop
from bot.features.contests.poster import ContestPoster
from bot.features.contests.recorder import ContestRecorder
from bot.features.contests.records import Contest
from bot.features.contests.service import ContestService
from bot.features.contests.store import ContestStore
from bot.features.contests.views import COG_NAME, PromptModal, entries_view
from bot.scheduler import JobEvents
from bot.storage import InteractionRef
from generation.request import MAX_SEED

_log = logging.getLogger(__name__)
CONTEST_OPTION = "Which contest (its number); needed only when several are running"


class ContestCog(commands.Cog, name=COG_NAME):
    contest = app_commands.Group(name="contest", description="Community prompt contests", guild_only=True)

    def __init__(self, config: ConfigStore, service: ContestService, store: ContestStore, *, poster: ContestPoster,
                 loop: PhaseLoop, delivery: PrivateDelivery, recorder: ContestRecorder, events: JobEvents) -> None:
        self._config = config
        self._service = service
        self._store = store
        self._poster = poster
        self._loop = loop
        self._delivery = delivery
        self._recorder = recorder
        self._events = events
        self._unsubscribe: Callable[[], None] | None = None
        self._owed: asyncio.Task[int] | None = None

    @property
    def service(self) -> ContestService:
        return self._service

    @property
    def phases(self) -> PhaseLoop:
        """The loop that moves this feature's rounds on (for diagnostics: ``await phases.next_pass()``)."""
        return self._loop

    async def cog_load(self) -> None:
        # Subscribed for exactly as long as the cog is loaded, before any job of this feature is resumed.
        self._unsubscribe = self._events.subscribe(self._recorder)

    def start_background(self) -> None:
        """After resuming: tries that ended while the bot was down are shown, and the phase loop starts."""
        self._owed = asyncio.create_task(self._delivery.deliver_owed(), name="contest-owed-results")
        self._loop.start()

    async def cog_unload(self) -> None:
        await self._loop.stop()
        if self._owed is not None and not self._owed.done():
            self._owed.cancel()
            with contextlib.suppress(BaseException):
                await self._owed
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # --- moderators -------------------------------------------------------------------------------
    @contest.command(name="start", description="Start a prompt contest (moderators)")
    @app_commands.describe(
        theme="What entries should show", submit="How long entries stay open, e.g. 30m, 2h, 1d12h",
        vote="How long voting lasts after that, e.g. 1d", channel="Where to announce it (default: here)",
        max_entries="Entries each member may submit (1-5)", model="The model every entry uses",
        steps="Denoising steps for every entry", size="WIDTHxHEIGHT for every entry, e.g. 512x512",
        seed="One seed for every entry: only the prompt differs", blind="Hide prompts until the results",
        joined_before_voting="Only members who joined before voting opens may vote", prize="What the winner gets")
    async def start(self, interaction: discord.Interaction[Any], theme: app_commands.Range[str, 1, 200],
                    submit: app_commands.Range[str, 1, 20], vote: app_commands.Range[str, 1, 20],
                    channel: discord.TextChannel | None = None, max_entries: app_commands.Range[int, 1, 5] = 1,
                    model: str | None = None, steps: app_commands.Range[int, 1, 200] | None = None,
                    size: app_commands.Range[str, 3, 12] | None = None,
                    seed: app_commands.Range[int, 0, MAX_SEED] | None = None, blind: bool = False,
                    joined_before_voting: bool = False, prize: app_commands.Range[str, 1, 200] | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        requester = requester_of(interaction)
        # Used in a thread, the round belongs to the thread's channel: its gallery becomes a thread of that channel.
        here = requester.parent_channel_id or requester.channel_id
        started = await self._service.start(
            requester, theme=theme, submit=submit, vote=vote,
            channel_id=channel.id if channel is not None else here, max_entries=max_entries,
            model=model, steps=steps, size=size, seed=seed, blind=blind, joined_before_voting=joined_before_voting,
            prize=prize)
        self._loop.wake()  # its deadline may come before the loop's next look
        await self._poster.deliver_due()
        await self._reply(interaction, texts.started(started, await self._poster.announcement_state(started.id)))

    @contest.command(name="cancel", description="Cancel a contest (moderators)")
    @app_commands.describe(contest=CONTEST_OPTION, reason="Why (kept in the contest's audit)")
    async def cancel(self, interaction: discord.Interaction[Any], contest: int | None = None,
                     reason: app_commands.Range[str, 1, 200] | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        requester = requester_of(interaction)
        found = await self._service.resolve(requester, contest)
        cancelled = await self._service.cancel(requester, found, reason)
        self._loop.wake()
        await self._poster.deliver_due()
        await self._reply(interaction, texts.cancelled_reply(cancelled))

    @contest.command(name="disqualify", description="Take an entry out of a contest's vote (moderators)")
    @app_commands.describe(entry="The entry's number in the gallery", contest=CONTEST_OPTION,
                           reason="Why (kept in the contest's audit)")
    async def disqualify(self, interaction: discord.Interaction[Any], entry: app_commands.Range[int, 1, 10_000],
                         contest: int | None = None, reason: app_commands.Range[str, 1, 200] | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        requester = requester_of(interaction)
        found = await self._service.resolve(requester, contest)
        removed, votes = await self._service.disqualify(requester, found, entry, reason)
        await self._poster.remove_entry(found, removed)
        await self._reply(interaction, texts.disqualified(entry, votes))

    # --- members ----------------------------------------------------------------------------------
    @contest.command(name="enter", description="Make images for a contest under its rules, then submit one")
    @app_commands.describe(prompt="What to draw for the theme", contest=CONTEST_OPTION)
    async def enter(self, interaction: discord.Interaction[Any], prompt: app_commands.Range[str, 1, 2000],
                    contest: int | None = None) -> None:
        requester = requester_of(interaction)
        found = await self._service.resolve(requester, contest)
        await self._service.check_enter(requester, found)  # refused before anything is shown or stored
        await self._make(interaction, requester, found, prompt)

    @contest.command(name="status", description="A contest's phase, entries and time left")
    @app_commands.describe(contest=CONTEST_OPTION)
    async def status(self, interaction: discord.Interaction[Any], contest: int | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        requester = requester_of(interaction)
        try:
            found = await self._service.resolve(requester, contest)
        except ContestProblem:
            if contest is not None or not (recent := await self._service.listed(requester)):
                raise
            found = recent[0]  # nothing running: the latest round
        seen = await self._service.overview(requester, found)
        await self._reply(interaction, texts.status(seen.contest, seen.entries, mine=seen.mine, vote=seen.vote,
                                                    winners=seen.placings))

    @contest.command(name="list", description="This server's contests")
    async def list_contests(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self._reply(interaction, texts.contest_list(await self._service.listed(requester_of(interaction))))

    @contest.command(name="leaderboard", description="Contest points in this server")
    async def leaderboard(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        requester = requester_of(interaction)
        if requester.in_dm:
            raise ContestProblem(refusals.IN_SERVERS_ONLY)
        await self._reply(interaction, texts.leaderboard(await self._store.leaderboard(requester.guild_id)))

    @contest.command(name="my-entries", description="Your entries in a contest, and withdrawing them")
    @app_commands.describe(contest=CONTEST_OPTION)
    async def my_entries(self, interaction: discord.Interaction[Any], contest: int | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        requester = requester_of(interaction)
        found = await self._service.resolve(requester, contest)
        mine = await self._service.my_entries(requester, found)
        files = [discord.File(io.BytesIO(png), filename=f"entry_{index}.png")
                 for index, (_, png) in enumerate(mine, start=1) if png is not None]
        entries = [entry for entry, _ in mine]
        text = texts.my_entries(found, entries)
        if found.phase == "submitting" and entries:
            await interaction.followup.send(text, files=files, view=entries_view(entries), ephemeral=True,
                                            allowed_mentions=NO_MENTIONS)
        else:
            await interaction.followup.send(text, files=files, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @start.autocomplete("model")
    async def _models(self, interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        wanted = current.lower()
        return [app_commands.Choice(name=name, value=name) for name in self._config.current.generation.enabled_names()
                if wanted in name.lower()][:25]

    @enter.autocomplete("contest")
    @status.autocomplete("contest")
    @cancel.autocomplete("contest")
    @disqualify.autocomplete("contest")
    @my_entries.autocomplete("contest")
    async def _contests(self, interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[int]]:
        if interaction.guild_id is None:
            return []
        found = await self._store.in_guild(interaction.guild_id, limit=25)
        return [app_commands.Choice(name=f"#{c.number} · {' '.join(c.theme.split())[:60]} · "
                                         f"{texts.PHASE_WORDS[c.phase]}", value=c.number)
                for c in found if current.strip("# ") in str(c.number) or current.lower() in c.theme.lower()]

    # --- buttons (views.py routes every click here) -------------------------------------------------
    async def on_contest_button(self, interaction: discord.Interaction[Any], action: Action, target: str,
                                index: int | None) -> None:
        try:
            if action == "retry":
                await self._ask_prompt(interaction, target)
                return
            await interaction.response.defer(ephemeral=True, thinking=True)
            await self._reply(interaction, await self._button_text(interaction, action, target, index))
        except Exception as exc:
            await reply_error(interaction, exc)

    async def _button_text(self, interaction: discord.Interaction[Any], action: Action, target: str,
                           index: int | None) -> str:
        requester = requester_of(interaction)
        if action == "submit":
            contest, _, count = await self._service.submit_entry(requester, target, index or 0)
            return texts.entered(contest, count)
        if action == "withdraw":
            contest, remaining = await self._service.withdraw(requester, target)
            return texts.withdrawn(contest, remaining)
        if action == "vote":
            member = interaction.user
            joined = member.joined_at if isinstance(member, discord.Member) else None
            contest, entry, previous = await self._service.vote(requester, target, joined)
            return texts.voted(contest, entry.number, previous.number if previous is not None else None)
        contest, voted_for = await self._service.my_vote(requester, target)
        return texts.my_vote(contest, voted_for)

    async def _ask_prompt(self, interaction: discord.Interaction[Any], job_id: str) -> None:
        _, stored = await self._service.try_of(requester_of(interaction), job_id)
        await interaction.response.send_modal(PromptModal(stored.request.prompt, partial(self._retry, job_id)))

    async def _retry(self, job_id: str, interaction: discord.Interaction[Any], prompt: str) -> None:
        requester = requester_of(interaction)
        contest, stored = await self._service.try_of(requester, job_id)
        member = self._service.as_member(requester, contest, stored)
        await self._service.check_enter(member, contest)
        await self._make(interaction, member, contest, prompt)

    # --- shared -------------------------------------------------------------------------------------
    async def _make(self, interaction: discord.Interaction[Any], requester: Requester, contest: Contest,
                    prompt: str) -> None:
        """Say the images are on their way, then store and admit the try; its images come as a followup."""
        await interaction.response.send_message(texts.making(contest), ephemeral=True, allowed_mentions=NO_MENTIONS)
        ref = InteractionRef(interaction.application_id, interaction.token, interaction.created_at)
        try:
            await self._service.enter(requester, contest, prompt, ref)
        except Exception as exc:  # a refusal (a rate, a full queue): it replaces "Making your images…"
            with contextlib.suppress(discord.HTTPException):
                await interaction.edit_original_response(content=error_text(exc), allowed_mentions=NO_MENTIONS)

    @staticmethod
    async def _reply(interaction: discord.Interaction[Any], text: str) -> None:
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
