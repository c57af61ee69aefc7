"""Show each job on Discord: one status message (queue place, progress, preview), then the result.

Which buttons go under a status or a result is the feature's choice: it passes its ``JobViews``.

The status message is the interaction's response, edited through the interaction webhook while its
token lives (15 minutes). After that (or as soon as Discord rejects the token), progress edits
stop, status edits go through the bot token, and the result is posted to the channel as a new
message addressed to the requester. Events that arrive before the status message exists are kept
and shown once the cog ``attach``es it.

Results are shown under the safety mode that ``safety_mode`` gives for the stored job (its server, and whether
its channel is age-restricted) at the time they are posted; previews of a job whose images will be checked are
blurred, since the checker judges only finished images.
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, cast

import discord
from PIL import Image

from bot.core.faults import Checkpoints
from bot.core.policy import SafetyMode
from bot.discord_ui.images import blurred, upload_limit
from bot.discord_ui.interactions import NO_MENTIONS
from bot.discord_ui.result_files import ResultFiles
from bot.discord_ui.result_message import ResultContent, Upload, result_message, stored_result
from bot.discord_ui.texts import (
    DONE_BELOW_TEXT,
    IMAGES_GONE_TEXT,
    INTERRUPTED_TEXT,
    PAUSED_TEXT,
    POSTING_RETRY_TEXT,
    STARTING_TEXT,
    about_request,
    failure_text,
    progress_text,
    queued_text,
    undeliverable_text,
)
from bot.storage import InteractionRef, JobRecord, Storage
from generation.request import GenerationResult, ProgressEvent

_log = logging.getLogger(__name__)

PREVIEW_SIDE = 256  # px on the long side of every preview, whatever the latent's size
# Discord's answers for an interaction token that no longer works: 401/50027 Invalid Webhook Token,
# 404/10015 Unknown Webhook.
_DEAD_TOKEN_CODES = frozenset({50027, 10015})
MAX_DELIVERY_ATTEMPTS = 6  # then the owner is told directly and the job is undeliverable
# Ids of jobs whose end this process showed (or left to the outbox), newest last: a late attach or
# withdraw of one of them keeps nothing. Bounded: such calls come within moments of the end.
ENDED_REMEMBERED = 1024


def delivery_backoff_s(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones: 10 s, 30 s, 90 s, ... at most 15 min."""
    return float(min(900, 10 * 3 ** (attempts - 1)))


def delivery_nonce(job_id: str) -> str:
    """Discord's nonce (at most 25 characters) for a job's channel post: a retry returns the first post."""
    return job_id[:25]


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
    withdrawn: bool = False
    waiting_text: str | None = None  # what the status message shows while the job waits (None: something else)
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
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 checkpoints: Checkpoints | None = None,
                 loading_line: Callable[[], str | None] = lambda: None,
                 safety_mode: Callable[[JobRecord], SafetyMode] = lambda _stored: "off") -> None:
        self._checkpoints = checkpoints or Checkpoints()
        self._safety_mode = safety_mode
        self._loading_line = loading_line
        self._failed_attempt_hooks: list[Callable[[], None]] = []
        self._client = client
        self._storage = storage
        self._views = views
        self._interval = progress_interval_s
        self._monotonic = monotonic
        self._now = now
        self._shown: dict[str, _Shown] = {}  # per live job; dropped on every way a job ends
        self._ended: OrderedDict[str, None] = OrderedDict()

    # --- wiring -------------------------------------------------------------------------------
    def target_for_stored(self, stored: JobRecord) -> StatusTarget:
        """The status target of a stored job (after a restart): upload limit from the cached guild."""
        return StatusTarget(stored.user_id, stored.channel_id or 0, stored.interaction, stored.status_message_id,
                            self._guild_limit(stored.guild_id))

    async def adopt_original(self, stored: JobRecord) -> int | None:
        """After a restart: the id of a job's status message that was posted but never recorded (the
        interaction's @original, while its token lives), now recorded; None when there is none."""
        if stored.interaction is None or not stored.interaction.usable(self._now()):
            return None
        webhook = discord.Webhook.partial(stored.interaction.application_id, stored.interaction.token,
                                          client=self._client)
        try:
            # Discord takes "@original" wherever an interaction webhook's message id goes.
            message = await webhook.fetch_message(cast(int, "@original"))
        except discord.HTTPException as exc:
            _log.info("job %s has no status message to adopt: %s", stored.id, exc)
            return None
        await self._storage.set_messages(stored.id, status_message_id=message.id)
        return message.id

    async def attach(self, job_id: str, target: StatusTarget, *, posted_text: str | None = None) -> None:
        """The cog answered the interaction (with ``posted_text``): show whatever happened to the job meanwhile,
        unless the answer says it already."""
        if job_id in self._ended:
            return  # it ended and its end is shown (found through storage): nothing waits for this message
        shown = self._shown.setdefault(job_id, _Shown())
        async with shown.lock:
            shown.target = target
            shown.waiting_text = posted_text
            pending, shown.pending = shown.pending, None
            try:
                if pending is not None:
                    await pending(target)
            finally:
                if shown.finished:
                    self._forget(job_id)

    def _forget(self, job_id: str) -> None:
        """The job's end is shown, or left to the outbox: keep nothing more of it."""
        self._shown.pop(job_id, None)
        self._ended[job_id] = None
        if len(self._ended) > ENDED_REMEMBERED:
            self._ended.popitem(last=False)

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
        text = self.queued_status(position, eta_s) if position is not None else PAUSED_TEXT
        shown = self._shown.setdefault(job_id, _Shown())

        async def show(target: StatusTarget) -> None:
            if text == shown.waiting_text:
                return  # the message says so already (the cog's answer showed the same place)
            if await self._edit(target, text, view=self._views.status_view(job_id)):
                shown.waiting_text = text

        await self._render(job_id, show)

    def queued_status(self, position: int, eta_s: float | None) -> str:
        """A queued job's status text (``eta_s``: until it starts), with the model's loading progress while the
        model loads."""
        return queued_text(position, eta_s, loading=self._loading_line())

    async def started(self, job_id: str) -> None:
        shown = self._shown.setdefault(job_id, _Shown())

        async def show(target: StatusTarget) -> None:
            # The first step's edit would follow within a moment: it waits its turn like any progress edit.
            shown.last_progress_edit = self._monotonic()
            shown.waiting_text = None
            await self._edit(target, STARTING_TEXT, view=self._views.status_view(job_id))

        await self._render(job_id, show)

    async def progress(self, job_id: str, event: ProgressEvent, *, veiled: bool = False) -> None:
        """A step finished; ``veiled``: the job's images go through the safety checker, so its preview is blurred."""
        if event.step >= event.total:
            return  # the result follows at once
        shown = self._shown.setdefault(job_id, _Shown())
        if shown.target is None or shown.target.message_id is None:
            # Not attached yet (the status post and its record are still on their way): hold the latest
            # step for attach() rather than drop it; an earlier held step is of no more use.
            if not shown.finished:
                shown.pending = lambda target: self._show_progress(job_id, shown, target, event, veiled)
            return
        if self._monotonic() - shown.last_progress_edit < self._interval and not (event.moved and event.step == 0):
            return  # throttled: Discord allows a few edits per token every few seconds (a move is always told)
        async with shown.lock:
            if not shown.finished:
                await self._show_progress(job_id, shown, shown.target, event, veiled)

    async def _show_progress(self, job_id: str, shown: _Shown, target: StatusTarget, event: ProgressEvent,
                             veiled: bool) -> None:
        if not self._token_usable(target):
            return  # a bot-token edit per step would hit rate limits and notify nobody
        shown.last_progress_edit = self._monotonic()
        uploads: list[Upload] = []
        if event.preview is not None:
            uploads.append((await asyncio.to_thread(preview_png, event.preview, veiled=veiled), "preview.png"))
        await self._edit(target, progress_text(event.step, event.total, moved=event.moved), uploads=uploads,
                         view=self._views.status_view(job_id), only_if_token=True)

    def encode(self, job_id: str, result: GenerationResult) -> ResultFiles:
        """Start encoding a fresh result's files (its PNGs, and the grid to upload) in threads, at once: the
        recorder stores the PNGs while the grid is encoded, and ``finished`` takes both."""
        shown = self._shown.get(job_id)
        limit = shown.target.attachment_limit if shown is not None and shown.target is not None else None
        return ResultFiles.start(job_id, result, limit)

    async def finished(self, stored: JobRecord, result: GenerationResult | None,
                       files: ResultFiles | None = None) -> None:
        """Show how the job ended (its result, or why it has none) and record it delivered; a failed
        attempt leaves the job owed, for the outbox to try again. ``files``: the result's encodes (``encode``),
        whose PNGs are the ones stored."""
        shown = self._shown.setdefault(stored.id, _Shown())
        shown.finished = True
        if shown.withdrawn:  # the cog already told the user why this job will not run
            self._forget(stored.id)
            await self._record(self._storage.record_delivery(stored.id), stored.id)
            return
        content = None
        if result is not None:
            content = ResultContent.of(result, await files.pngs() if files is not None else ())
        await self._render_end(stored.id, shown, lambda target: self._deliver(target, stored, content, files))

    async def _render_end(self, job_id: str, shown: _Shown,
                          render: Callable[[StatusTarget], Awaitable[object]]) -> None:
        """Show how a job ended; then keep nothing of it, unless the end waits for its status message
        (``attach``). If showing fails, the stored job stays owed and the outbox shows it instead."""
        shown_or_parked = False
        try:
            await self._render(job_id, render, final=True)
            shown_or_parked = True
        finally:
            if not shown_or_parked or shown.target is not None:
                self._forget(job_id)

    def on_failed_attempt(self, hook: Callable[[], None]) -> None:
        """``hook()`` after each failed delivery attempt (the outbox wakes to schedule the retry)."""
        self._failed_attempt_hooks.append(hook)

    async def withdrawn(self, job_id: str) -> None:
        """The cog took back a job nobody could see and told its user so: nothing more to show."""
        if job_id in self._ended:
            return
        shown = self._shown.setdefault(job_id, _Shown())
        shown.withdrawn = True
        if shown.finished:  # it ended first, its end parked for a status message that will never come
            self._forget(job_id)
            await self._record(self._storage.record_delivery(job_id), job_id)

    def is_live(self, job_id: str) -> bool:
        """Whether this process still shows the job itself (the outbox leaves such jobs alone)."""
        return job_id in self._shown

    @property
    def live_jobs(self) -> int:
        """How many jobs this process still keeps state for (0 once every job it showed has ended)."""
        return len(self._shown)

    async def redeliver(self, stored: JobRecord) -> None:
        """The outbox's call: show the end of a stored job that Discord has not accepted yet.

        ``stored`` may be stale (the outbox read a page of owed jobs, and delivering the ones before
        this took a while): the job is read again first, and left alone if this process shows it live or
        its end was recorded meanwhile. A status message posted but never recorded is found first, so the
        end replaces it rather than leaving it "Queued" above a second message."""
        if self.is_live(stored.id):
            return
        shown = self._shown.setdefault(stored.id, _Shown(finished=True))
        try:
            async with shown.lock:
                fresh = await self._storage.get_job(stored.id)
                if fresh is None or fresh.delivery != "owed":
                    return
                if fresh.status_message_id is None and await self.adopt_original(fresh) is not None:
                    fresh = await self._storage.require_job(fresh.id)
                shown.target = target = self.target_for_stored(fresh)
                await self._deliver(target, fresh, None)
        finally:
            self._forget(stored.id)

    async def interrupted(self, job_id: str) -> None:
        text = INTERRUPTED_TEXT
        shown = self._shown.setdefault(job_id, _Shown())
        shown.finished = True  # for this process, the job has ended
        await self._render_end(job_id, shown, lambda target: self._edit(target, text, view=None))

    # --- the end of a job -----------------------------------------------------------------------
    async def _deliver(self, target: StatusTarget, stored: JobRecord, content: ResultContent | None,
                       files: ResultFiles | None = None) -> None:
        message_id: int | None = None
        channel_gone = False
        try:
            if stored.status == "done":
                # A fresh result is in memory; only a redelivery reads the stored PNGs back.
                content = content or await stored_result(self._storage, stored)
                if content is not None:
                    message_id = await self._post_result(target, stored, content, files)
                else:
                    message_id = await self._post_text(target, stored, IMAGES_GONE_TEXT)
            else:
                message_id = await self._post_text(target, stored, failure_text(stored.status, stored.error))
        except (discord.NotFound, discord.Forbidden) as exc:  # the channel is gone, or closed to the bot
            _log.warning("cannot post the end of job %s in channel %s: %s", stored.id, target.channel_id, exc)
            channel_gone = True
        except Exception:  # never swallowed: logged, and the job stays owed for the next attempt
            _log.exception("could not show the end of job %s", stored.id)
        if message_id is None:
            await self._attempt_failed(target, stored, give_up=channel_gone)
            for hook in self._failed_attempt_hooks:
                hook()
            return
        self._checkpoints.reached("posted")
        result_message_id = message_id if stored.status == "done" else None
        await self._record(self._storage.record_delivery(stored.id, result_message_id=result_message_id), stored.id)
        self._checkpoints.reached("delivery recorded")

    async def _post_result(self, target: StatusTarget, stored: JobRecord, content: ResultContent,
                           files: ResultFiles | None) -> int | None:
        grid = await files.grid(upload_limit(target.attachment_limit)) if files is not None else None
        text, uploads = await result_message(stored, content, target.attachment_limit,
                                             safety=self._safety_mode(stored), grid=grid)
        view = self._views.result_view(stored.id, len(content.images))
        if target.message_id is not None and await self._edit(target, text, uploads=uploads, view=view,
                                                              only_if_token=True):
            return target.message_id
        # No usable interaction token: post anew with the bot token, pinging only the requester. The
        # job's nonce makes a retried post return the first message instead of a second one.
        message = await self._client.get_partial_messageable(target.channel_id).send(
            content=text, files=_files(uploads), view=view, nonce=delivery_nonce(stored.id),
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False,
                                                     users=[discord.Object(target.user_id)]))
        if target.message_id is not None and target.message_id != message.id:
            await self._edit(target, DONE_BELOW_TEXT, view=None)  # its cancel button goes
        return message.id

    async def _post_text(self, target: StatusTarget, stored: JobRecord, text: str) -> int | None:
        if target.message_id is not None:
            return target.message_id if await self._edit(target, text, view=None) else None
        if not target.channel_id:
            return None  # nowhere in a channel to say it: the outbox ends by telling the owner directly
        # A new message: name the request, since the user may have several.
        about = about_request(target.user_id, stored.request.prompt)
        message = await self._client.get_partial_messageable(target.channel_id).send(
            content=(about + text)[:2000], nonce=delivery_nonce(stored.id),
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False,
                                                     users=[discord.Object(target.user_id)]))
        return message.id

    async def _attempt_failed(self, target: StatusTarget, stored: JobRecord, *, give_up: bool = False) -> None:
        attempts = stored.delivery_attempts + 1
        if give_up or attempts >= MAX_DELIVERY_ATTEMPTS or (target.message_id is None and not target.channel_id):
            reference = secrets.token_hex(4)
            _log.error("giving up showing the end of job %s after %d attempt(s) (ref %s)", stored.id, attempts,
                       reference)
            await self._record(self._storage.delivery_failed(stored.id, retry_at=None), stored.id)
            await self._tell_owner(stored, undeliverable_text(stored.request.prompt, reference))
            return
        retry_at = self._now() + timedelta(seconds=delivery_backoff_s(attempts))
        await self._record(self._storage.delivery_failed(stored.id, retry_at=retry_at), stored.id)
        if stored.status == "done" and target.message_id is not None:
            await self._edit(target, POSTING_RETRY_TEXT, view=None)

    async def _tell_owner(self, stored: JobRecord, text: str) -> None:
        """The last resort: a direct message to the owner, else a line in the job's channel."""
        try:
            user = self._client.get_user(stored.user_id) or await self._client.fetch_user(stored.user_id)
            await user.send(text, allowed_mentions=NO_MENTIONS)
            return
        except discord.HTTPException as exc:
            _log.warning("could not message user %s about job %s: %s", stored.user_id, stored.id, exc)
        if stored.channel_id:
            try:
                await self._client.get_partial_messageable(stored.channel_id).send(
                    f"<@{stored.user_id}> {text}"[:2000], allowed_mentions=discord.AllowedMentions(
                        everyone=False, roles=False, users=[discord.Object(stored.user_id)]))
            except discord.HTTPException as exc:
                _log.error("could not tell user %s about job %s anywhere: %s", stored.user_id, stored.id, exc)

    @staticmethod
    async def _record(write: Awaitable[object], job_id: str) -> None:
        try:
            await write
        except Exception:  # the job stays owed: a repeat of its delivery is harmless (edit, or nonce)
            _log.exception("could not record the delivery of job %s", job_id)

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


def preview_png(image: Image.Image, *, veiled: bool = False) -> bytes:
    """A preview PNG whose long side is ``PREVIEW_SIDE``: a linear preview is the latent's size (39×26 for a
    312×208 request), too small to see in Discord, so it is scaled up (bilinear: cheap, and a blur suits a
    rough look); a full-size one (a tiny autoencoder's) is scaled down to keep each progress edit small.
    ``veiled``: strongly blurred first (the safety checker has not judged the image yet)."""
    if veiled:
        image = blurred(image)
    scale = PREVIEW_SIDE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    preview = image.resize(size, Image.Resampling.BILINEAR if scale > 1 else Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    preview.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()
