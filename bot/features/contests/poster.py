"""Send the posts a round owes its channel (``PhaseStore``'s outbox), each exactly once.

A post is rendered when it is sent, from what is stored (the round, its entries, the tally), so a repeat
looks like the first try. Each is sent with its nonce (``enforce_nonce``): when a kill comes between
Discord's answer and the record, the next try gets the first message back instead of a second one. The
gallery goes in a thread started from the "voting is open" message; a thread started from a message has
that message's id, so a thread made before a restart is found again (Discord answers 160004) rather than
made twice. Without the right to make threads, the gallery goes in the channel.

A failed send is logged and tried again after 10 s, 30 s, 90 s ... (at most 15 min); posts of a round keep
their order. A channel that is gone or closed to the bot ends the round's sending (logged as an error).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal

import discord

from bot.core.faults import Checkpoints
from bot.discord_ui.images import upload_limit
from bot.discord_ui.interactions import NO_MENTIONS
from bot.features.contests import podium, texts
from bot.features.contests.delivery import fit_upload
from bot.features.contests.phase_store import PhaseStore
from bot.features.contests.records import Contest, Entry, Post
from bot.features.contests.store import ContestStore
from bot.features.contests.views import gallery_end_view, vote_view

_log = logging.getLogger(__name__)
THREAD_EXISTS = 160004  # Discord: "A thread has already been created for this message"
THREAD_ARCHIVE_MINUTES: Literal[10080] = 10080  # a week without messages before Discord hides the thread
GALLERY_POSTS = frozenset({"voting_open", "gallery_entry", "gallery_end", "results", "reveal"})


def retry_after_s(attempts: int) -> float:
    return float(min(900, 10 * 3 ** (attempts - 1)))


class ContestPoster:
    def __init__(self, client: discord.Client, contests: ContestStore, phases: PhaseStore, *,
                 images_per_try: Callable[[int], int], now: Callable[[], datetime],
                 checkpoints: Checkpoints | None = None) -> None:
        self._client = client
        self._contests = contests
        self._phases = phases
        self._images_per_try = images_per_try  # of a server, for the announcement's rules line
        self._now = now
        self._checkpoints = checkpoints or Checkpoints()
        self._lock = asyncio.Lock()  # the phase loop and a command may both send: one sender at a time

    async def deliver_due(self) -> int:
        """Send every owed post that is due, in each round's order; returns how many were sent."""
        sent = 0
        async with self._lock:
            stuck: set[str] = set()
            for post in await self._phases.owed_posts():
                if post.contest_id in stuck:
                    continue  # an earlier post of this round failed: keep the round's order
                outcome = await self._deliver(post)
                if outcome is None:
                    stuck.add(post.contest_id)
                sent += bool(outcome)
        return sent

    async def _deliver(self, post: Post) -> bool | None:
        """True: sent; False: nothing to send (left out, or given up); None: failed, to be tried again."""
        contest = await self._contests.get(post.contest_id)
        if contest is None:
            return False
        if contest.phase == "cancelled" and post.kind in GALLERY_POSTS:
            await self._phases.failed(post.id, None)  # the round was cancelled before its gallery was out
            return False
        try:
            message_id = await self._send(contest, post)
        except (discord.NotFound, discord.Forbidden) as exc:
            _log.error("contest #%d of server %d: cannot post its %s in channel %d (%s); giving up on it",
                       contest.number, contest.guild_id, post.kind, contest.channel_id, exc)
            await self._phases.failed(post.id, None)
            return False
        except Exception:
            retry = retry_after_s(post.attempts + 1)
            _log.exception("contest #%d of server %d: its %s could not be posted; trying again in %g s",
                           contest.number, contest.guild_id, post.kind, retry)
            await self._phases.failed(post.id, self._now() + timedelta(seconds=retry))
            return None
        self._checkpoints.reached("contest posted")
        await self._phases.posted(post.id, message_id)
        return True

    def _channel(self, contest: Contest, channel_id: int) -> discord.PartialMessageable:
        return self._client.get_partial_messageable(channel_id, guild_id=contest.guild_id)

    async def _send(self, contest: Contest, post: Post) -> int:
        kind = post.kind
        if kind == "announce":
            content = texts.announcement(contest, self._images_per_try(contest.guild_id))
        elif kind == "voting_open":
            content = texts.voting_open(contest, len(await self._contests.entries(contest.id, active=True)))
        elif kind == "no_entries":
            content = texts.no_entries(contest)
        elif kind == "cancelled":
            content = texts.cancelled(contest)
        elif kind == "results":
            return await self._send_results(contest, post)
        else:
            return await self._send_to_gallery(contest, post)
        message = await self._channel(contest, contest.channel_id).send(
            content, nonce=post.nonce, allowed_mentions=NO_MENTIONS)
        return message.id

    async def _send_to_gallery(self, contest: Contest, post: Post) -> int:
        gallery = self._channel(contest, await self._gallery(contest))
        if post.kind == "gallery_entry":
            entry = await self._contests.entry(post.entry_id or "")
            if entry is None or not entry.active:
                message = await gallery.send(texts.gallery_entry_removed(entry.number if entry else None),
                                             nonce=post.nonce, allowed_mentions=NO_MENTIONS)
                return message.id
            return await self._send_entry(contest, entry, gallery, post)
        if post.kind == "gallery_end":
            count = len(await self._contests.entries(contest.id, active=True))
            message = await gallery.send(texts.gallery_end(contest, count), view=gallery_end_view(contest.id),
                                         nonce=post.nonce, allowed_mentions=NO_MENTIONS)
            return message.id
        placings = await self._contests.placings(contest.id)  # a reveal part
        message = await gallery.send(texts.reveal(contest, placings, post.part), nonce=post.nonce,
                                     allowed_mentions=NO_MENTIONS)
        return message.id

    async def _send_entry(self, contest: Contest, entry: Entry, gallery: discord.PartialMessageable,
                          post: Post) -> int:
        png = await self._contests.image(entry.id)
        files = []
        if png is not None:
            data, name = await fit_upload(png, f"entry_{entry.number}", self._limit(contest))
            files.append(discord.File(io.BytesIO(data), filename=name))
        message = await gallery.send(texts.gallery_entry(entry, blind=contest.blind), files=files,
                                     view=vote_view(entry), nonce=post.nonce, allowed_mentions=NO_MENTIONS)
        return message.id

    async def _send_results(self, contest: Contest, post: Post) -> int:
        placings = await self._contests.placings(contest.id)
        winners = [placing for placing in placings if placing.place is not None]
        files = []
        images = [await self._contests.image(placing.entry.id) for placing in winners]
        if images and all(image is not None for image in images):
            picture = await asyncio.to_thread(podium.compose, [image for image in images if image is not None])
            files.append(discord.File(io.BytesIO(picture), filename="podium.png"))
        content = texts.results(contest, placings, await self._contests.vote_count(contest.id))
        message = await self._channel(contest, contest.channel_id).send(
            content, files=files, nonce=post.nonce, allowed_mentions=NO_MENTIONS)
        return message.id

    def _limit(self, contest: Contest) -> int:
        guild = self._client.get_guild(contest.guild_id)
        return upload_limit(guild.filesize_limit if guild is not None else None)

    async def _gallery(self, contest: Contest) -> int:
        """Where the gallery goes: the thread of the "voting is open" message, made on first need."""
        if contest.gallery_channel_id is not None:
            return contest.gallery_channel_id
        opening = await self._phases.post_of(contest.id, "voting_open")
        if opening is None or opening.message_id is None:
            raise RuntimeError(f"contest {contest.id}: the gallery comes before its opening message")
        name = f"Contest #{contest.number} · {' '.join(contest.theme.split())}"[:100]
        try:
            thread = await self._channel(contest, contest.channel_id).get_partial_message(
                opening.message_id).create_thread(name=name, auto_archive_duration=THREAD_ARCHIVE_MINUTES)
            self._checkpoints.reached("contest thread made")
            gallery = thread.id
        except discord.Forbidden:
            _log.info("contest #%d of server %d: no thread allowed in channel %d; the gallery goes in the channel",
                      contest.number, contest.guild_id, contest.channel_id)
            gallery = contest.channel_id
        except discord.HTTPException as exc:
            if exc.code == THREAD_EXISTS:
                gallery = opening.message_id  # made before a restart: the thread has its message's id
            elif 400 <= exc.status < 500:  # a channel that holds no threads (a thread itself, say): no retry helps
                _log.info("contest #%d of server %d: no thread possible in channel %d (%s); the gallery goes in the "
                          "channel", contest.number, contest.guild_id, contest.channel_id, exc)
                gallery = contest.channel_id
            else:
                raise
        await self._phases.set_gallery(contest.id, gallery)
        return gallery

    async def announcement_state(self, contest_id: str) -> str:
        """``posted``, ``owed`` (to be tried again) or ``failed`` (the bot may not post in the channel)."""
        post = await self._phases.post_of(contest_id, "announce")
        return post.state if post is not None else "owed"

    async def remove_entry(self, contest: Contest, entry: Entry) -> None:
        """Show a disqualified entry as removed in the gallery (best effort: its Vote button refuses anyway)."""
        post = await self._phases.post_of(contest.id, "gallery_entry", entry.id)
        fresh = await self._contests.get(contest.id)
        if post is None or post.message_id is None or fresh is None or fresh.gallery_channel_id is None:
            return
        try:
            await self._channel(fresh, fresh.gallery_channel_id).get_partial_message(post.message_id).edit(
                content=texts.gallery_entry_removed(entry.number), attachments=[], view=None,
                allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as exc:
            _log.warning("contest #%d: could not mark entry %s removed in the gallery: %s", contest.number,
                         entry.number, exc)
