"""Show each job on Discord: one status message (queue place, progress, preview), then the result.

Which buttons go under a status or a result is the feature's choice: it passes its ``JobViews``.

The status message is the interaction's response, edited through the interaction webhook while its
token lives (15 minutes). After that (or as soon as Discord rejects the token), progress edits
stop, status edits go through the bot token, and the result is posted to the channel as a new
message addressed to the requester. Events that arrive before the status message exists are kept
and shown once the cog ``attach``es it.
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import discord
from PIL import Image

from bot.discord_ui.images import EncodedImage, encode_to_fit, make_grid, upload_limit
from bot.discord_ui.interactions import NO_MENTIONS
from bot.discord_ui.texts import (
    INTERRUPTED_TEXT,
    failure_text,
    kind_note,
    progress_text,
    queued_text,
    result_message_text,
    sanitize_user_text,
)
from bot.storage import InteractionRef, JobRecord, Storage
from generation.request import GenerationResult, ProgressEvent

_log = logging.getLogger(__name__)

PREVIEW_SIDE = 256
# Discord's answers for an interaction token that no longer works: 401/50027 Invalid Webhook Token,
# 404/10015 Unknown Webhook.
_DEAD_TOKEN_CODES = frozenset({50027, 10015})
Upload = tuple[bytes, str]  # (data, filename): a fresh discord.File is built per request


class JobViews(Protocol):
    """The buttons a feature puts under its jobs' messages."""

    def status_view(self, job_id: str) -> discord.ui.View:
        """Under a queued or running job (a cancel button)."""
        ...

    def result_view(self, job_id: str, count: int) -> discord.ui.View:
        """Under a finished job's images."""
        ...


@dataclass
class StatusTarget:
    """Where a job's status message lives and how to edit it (``interaction`` None: bot token only)."""

    user_id: int
    channel_id: int
    interaction: InteractionRef | None
    message_id: int | None
    attachment_limit: int | None = None


@dataclass
class _Shown:
    target: StatusTarget | None = None
    pending: Callable[[StatusTarget], Awaitable[object]] | None = None  # the latest render that waited
    last_progress_edit: float = field(default=float("-inf"))
    finished: bool = False
    # Renders of one job run one at a time, in order: a late "queued" edit must never land on the result.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _token_rejected(exc: discord.HTTPException) -> bool:
    return exc.status == 401 or exc.code in _DEAD_TOKEN_CODES


def _files(uploads: list[Upload]) -> list[discord.File]:
    return [discord.File(io.BytesIO(data), filename=name) for data, name in uploads]


class DiscordPresenter:
    """Shows jobs on Discord (what ``bot.features.imagine.recorder.Presenter`` asks for)."""

    def __init__(self, client: discord.Client, storage: Storage, views: JobViews, *, progress_interval_s: float = 2.0,
                 monotonic: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._client = client
        self._storage = storage
        self._views = views
        self._interval = progress_interval_s
        self._monotonic = monotonic
        self._now = now
        self._shown: dict[str, _Shown] = {}

    # --- wiring -------------------------------------------------------------------------------
    def target_for_stored(self, stored: JobRecord) -> StatusTarget:
        """The status target of a stored job (after a restart): upload limit from the cached guild."""
        return StatusTarget(stored.user_id, stored.channel_id or 0, stored.interaction, stored.status_message_id,
                            self._guild_limit(stored.guild_id))

    async def attach(self, job_id: str, target: StatusTarget) -> None:
        """The cog answered the interaction: show whatever happened to the job meanwhile."""
        shown = self._shown.setdefault(job_id, _Shown())
        async with shown.lock:
            shown.target = target
            pending, shown.pending = shown.pending, None
            if pending is not None:
                await pending(target)
        if shown.finished:
            self._shown.pop(job_id, None)

    async def _target_for(self, job_id: str, shown: _Shown) -> StatusTarget | None:
        if shown.target is not None:
            return shown.target
        stored = await self._storage.get_job(job_id)  # a job resumed after a restart
        if stored is None or stored.status_message_id is None or stored.channel_id is None:
            return None
        shown.target = self.target_for_stored(stored)
        return shown.target

    def _guild_limit(self, guild_id: int | None) -> int | None:
        guild = self._client.get_guild(guild_id) if guild_id else None
        return guild.filesize_limit if guild is not None else None

    async def _render(self, job_id: str, render: Callable[[StatusTarget], Awaitable[object]], *,
                      final: bool = False) -> None:
        shown = self._shown.setdefault(job_id, _Shown())
        async with shown.lock:
            if shown.finished and not final:
                return  # a late queue or progress update must not replace how the job ended
            target = await self._target_for(job_id, shown)
            if target is None or target.message_id is None:
                shown.pending = render  # shown by attach(); only the latest state matters
                return
            shown.pending = None  # an older parked state must never be replayed over this one
            await render(target)

    # --- Presenter ----------------------------------------------------------------------------
    async def queued(self, job_id: str, position: int | None, eta_s: float | None) -> None:
        text = queued_text(position, eta_s) if position is not None else "Queued — this server's queue is paused"
        await self._render(job_id, lambda target: self._edit(target, text, view=self._views.status_view(job_id)))

    async def started(self, job_id: str) -> None:
        await self._render(job_id, lambda target: self._edit(target, "Starting…", view=self._views.status_view(job_id)))

    async def progress(self, job_id: str, event: ProgressEvent) -> None:
        if event.step >= event.total:
            return  # the result follows at once
        shown = self._shown.setdefault(job_id, _Shown())
        if shown.target is None or shown.target.message_id is None:
            # Not attached yet (the status post and its record are still on their way): hold the latest
            # step for attach() rather than drop it; an earlier held step is of no more use.
            if not shown.finished:
                shown.pending = lambda target: self._show_progress(job_id, shown, target, event)
            return
        if self._monotonic() - shown.last_progress_edit < self._interval:
            return  # throttled: Discord allows a few edits per token every few seconds
        async with shown.lock:
            if not shown.finished:
                await self._show_progress(job_id, shown, shown.target, event)

    async def _show_progress(self, job_id: str, shown: _Shown, target: StatusTarget, event: ProgressEvent) -> None:
        if not self._token_usable(target):
            return  # a bot-token edit per step would hit rate limits and notify nobody
        shown.last_progress_edit = self._monotonic()
        uploads: list[Upload] = []
        if event.preview is not None:
            uploads.append((await asyncio.to_thread(_preview_png, event.preview), "preview.png"))
        await self._edit(target, progress_text(event.step, event.total), uploads=uploads,
                         view=self._views.status_view(job_id), only_if_token=True)

    async def finished(self, stored: JobRecord, result: GenerationResult | None) -> None:
        shown = self._shown.setdefault(stored.id, _Shown())
        shown.finished = True
        if result is not None:
            await self._render(stored.id, lambda target: self._show_result_or_say_why(target, stored, result),
                               final=True)
        else:
            text = failure_text(stored.status, stored.error)
            await self._render(stored.id, lambda target: self._edit(target, text, view=None), final=True)
        if shown.target is not None:
            self._shown.pop(stored.id, None)

    async def interrupted(self, job_id: str) -> None:
        text = INTERRUPTED_TEXT
        self._shown.setdefault(job_id, _Shown()).finished = True  # for this process, the job has ended
        await self._render(job_id, lambda target: self._edit(target, text, view=None), final=True)

    # --- Discord calls ------------------------------------------------------------------------
    async def _show_result_or_say_why(self, target: StatusTarget, stored: JobRecord,
                                      result: GenerationResult) -> None:
        try:
            await self._show_result(target, stored, result)
        except Exception as exc:  # a result nobody sees is the one outcome we must not allow
            reference = secrets.token_hex(4)
            _log.error("could not post the result of job %s (ref %s)", stored.id, reference, exc_info=exc)
            await self._edit(target, f"❌ The images were made but could not be posted (reference `{reference}`); "
                                     "please try again.", view=None)

    async def _show_result(self, target: StatusTarget, stored: JobRecord, result: GenerationResult) -> None:
        request = result.request
        limit = upload_limit(target.attachment_limit)
        basename = f"imagine_{stored.id[:8]}"
        # One image: the PNG already saved (with the same parameters) is the upload; don't encode it twice.
        saved = await self._storage.load_result_image(stored.id, 0) if len(result.images) == 1 else None
        if saved is not None and len(saved) <= limit:
            encoded = EncodedImage(saved, f"{basename}.png", "PNG", scaled=False)
        else:
            encoded = await asyncio.to_thread(
                lambda: encode_to_fit(make_grid(result.images), limit, result.parameters_text(0), basename=basename))
        note = kind_note(stored.kind)
        if encoded.scaled:
            note = (note + " · " if note else "") + \
                "scaled down to fit this server's upload limit; U buttons give full size"
        if result.warnings:
            note = (note + "\n" if note else "") + "\n".join(
                f"⚠ {sanitize_user_text(warning)}" for warning in result.warnings)  # warnings quote the prompt
        text = result_message_text(
            request.prompt, stored.user_id, result.seeds, request.model or "",
            (request.width or 0, request.height or 0), request.steps or 0, result.timings.total_s,
            negative=request.negative_prompt, guidance=request.guidance,
            strength=request.strength if request.mode == "img2img" else None, note=note,
        )
        uploads = [(encoded.data, encoded.filename)]
        view = self._views.result_view(stored.id, len(result.images))
        if await self._edit(target, text, uploads=uploads, view=view, only_if_token=True):
            await self._storage.set_messages(stored.id, result_message_id=target.message_id)
            return
        # No usable interaction token: post anew with the bot token, pinging only the requester, and
        # take the cancel button off the old status message.
        channel = self._client.get_partial_messageable(target.channel_id)
        try:
            message = await channel.send(content=text, files=_files(uploads), view=view,
                                         allowed_mentions=discord.AllowedMentions(
                                             everyone=False, roles=False, users=[discord.Object(target.user_id)]))
        except discord.HTTPException:
            _log.exception("could not post the result of job %s to channel %s", stored.id, target.channel_id)
            return
        await self._storage.set_messages(stored.id, result_message_id=message.id)
        await self._edit(target, "✅ Done — the result is posted below.", view=None)

    def _token_usable(self, target: StatusTarget) -> bool:
        return target.interaction is not None and target.interaction.usable(self._now())

    async def _edit(self, target: StatusTarget, content: str, *, uploads: list[Upload] | None = None,
                    view: discord.ui.View | None, only_if_token: bool = False) -> bool:
        """Edit the status message; True when Discord accepted it. Without a usable token the bot token
        is used, unless ``only_if_token`` (progress, results: a bot-token edit would not notify)."""
        if target.message_id is None:
            return False
        uploads = uploads or []
        if self._token_usable(target):
            assert target.interaction is not None
            webhook = discord.Webhook.partial(target.interaction.application_id, target.interaction.token,
                                              client=self._client)
            try:
                await webhook.edit_message(target.message_id, content=content, attachments=_files(uploads),
                                           view=view, allowed_mentions=NO_MENTIONS)
                return True
            except discord.HTTPException as exc:
                if not _token_rejected(exc):
                    _log.warning("could not update status message %s: %s", target.message_id, exc)
                    return False
                _log.info("interaction token of message %s was rejected; using the bot token", target.message_id)
                target.interaction = None  # expired early (or our clock is off): never try it again
        if only_if_token:
            return False
        try:
            channel = self._client.get_partial_messageable(target.channel_id)
            await channel.get_partial_message(target.message_id).edit(
                content=content, attachments=_files(uploads), view=view, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as exc:
            _log.warning("could not update status message %s: %s", target.message_id, exc)
            return False
        return True


def _preview_png(image: Image.Image) -> bytes:
    preview = image.copy()
    preview.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buffer = io.BytesIO()
    preview.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()
