"""The imagine feature's rules, free of Discord: compose, store and admit a job, follow-ups (upscale,
variation, reroll), cancel and delete, and resuming after a restart.

Moderators' policy applies here too: the content gate (``gate.ContentGate``) refuses a prompt that breaks the
server's content rules or length before anything is stored or downloaded, for new requests and follow-ups alike;
a request is marked for the safety checker wherever the effective safety mode is not off; U and V refuse an
image that the server's safety setting withholds.

The cog translates Discord into these calls and shows what they return; ``recorder.JobRecorder``
records what the scheduler reports; the presenter shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from bot.core.config import AppConfig
from bot.core.config_store import ConfigStore
from bot.core.content import ContentStats
from bot.core.errors import DirectMessagesOff, ImageWithheld, JobNotFound, Refused, ShuttingDown
from bot.core.faults import Checkpoints
from bot.core.identity import Requester
from bot.core.safety import needs_check, resolve_safety
from bot.features.imagine.compose import (
    Attachment,
    Composed,
    Draft,
    derive,
    draft,
    image_problem,
    resolve_model,
    typed_prompt,
)
from bot.features.imagine.flags import Options
from bot.features.imagine.gate import ContentGate
from bot.scheduler import Clock, Job, Scheduler
from bot.storage import InteractionRef, JobKind, JobRecord, Storage
from generation.errors import InvalidRequest
from generation.request import validate

_log = logging.getLogger(__name__)

UPSCALE_STRENGTH = 0.3  # keeps the composition, adds detail at twice the size
VARIATION_STRENGTH = 0.6  # same subject and layout, visibly different
FollowUpAction = Literal["u", "v", "reroll"]
# Why a job was dropped at a restart, as its requester reads it after "This request was dropped when the bot
# restarted: ".
DROPPED_NEVER_SHOWN = "it had not been shown yet; please run it again"
DROPPED_INPUT_GONE = "the image it started from was deleted"
_DRY_RUN_ID = "dry-run"  # the id of the stand-in job that ``check`` prices
# The stored kinds this feature makes and shows; other features resume and deliver their own jobs.
IMAGINE_KINDS: tuple[JobKind, ...] = ("imagine", "upscale", "variation", "reroll")


def img2img_steps(steps: int | None, strength: float) -> int:
    """Steps for an image-to-image follow-up: at least one denoising step must run (strength x steps >= 1),
    which few-step models (2-4 steps) would otherwise miss."""
    return max(steps or 1, math.ceil(1 / strength - 1e-9))


def dropped_no_longer_fits(problems: InvalidRequest) -> str:
    return f"it no longer fits this bot's settings ({problems})"


@dataclass(frozen=True)
class FollowUp:
    """A new job derived from a finished one."""

    composed: Composed
    kind: JobKind


@dataclass(frozen=True)
class FullSizeInstead:
    """A U click whose 2x upscale this bot cannot run (too large for the model): the stored image at
    full size is the answer, with ``reason`` saying why there is no upscale."""

    owner_id: int
    index: int
    image: bytes
    seed: int
    reason: str
    nsfw: bool = False  # the safety checker flagged it: shown as the server's safety mode says


class ImagineService:
    def __init__(self, config: ConfigStore, storage: Storage, scheduler: Scheduler, clock: Clock,
                 checkpoints: Checkpoints | None = None, *, gate: ContentGate | None = None) -> None:
        self._config = config
        self._storage = storage
        self._scheduler = scheduler
        self._clock = clock
        self._checkpoints = checkpoints or Checkpoints()
        self._gate = gate or ContentGate(ContentStats())

    # --- a new request ----------------------------------------------------------------------------
    def check_where(self, requester: Requester) -> None:
        """Refuse a direct message unless ``bot.allow_dms``: asked before anything is parsed or downloaded."""
        if requester.in_dm and not self._config.current.bot.allow_dms:
            raise DirectMessagesOff()

    def draft(self, prompt: str, explicit: Options, attachment: Attachment | None, requester: Requester) -> Draft:
        """The server's content rules and every option checked against today's config, before any attachment is
        downloaded; the server's default negative prompt added."""
        config = self._config.current
        content = self._gate.content_for(config, requester)
        self._gate.check(content, requester, prompt, explicit.negative or "")  # as typed: flags included
        self._gate.check_length(content, requester, typed_prompt(prompt, explicit))
        return draft(config, prompt, explicit, attachment=attachment, content=content)

    async def check(self, drafted: Draft, requester: Requester, *, image_coming: bool) -> None:
        """Refuse now, before the attachment is downloaded, what admission would refuse (a dry run: nothing is
        consumed). The refusal is recorded, without any image, as ``submit`` records one."""
        composed = drafted.priced(image_coming)
        try:
            self._scheduler.check(self._job(_DRY_RUN_ID, composed, requester))
        except Refused as exc:
            if not isinstance(exc, ShuttingDown):  # storage closes soon: store nothing new
                await self._storage.create_job(
                    composed.request, user_id=requester.user_id, guild_id=requester.guild_id or None,
                    channel_id=requester.channel_id, role_ids=requester.role_ids, status="refused",
                    refusal=exc.limit)
            raise

    def _with_safety(self, composed: Composed, requester: Requester) -> Composed:
        """The request marked for the safety checker when the mode where it was asked is not off (a follow-up
        is asked anew: checked under today's mode, whatever its parent had)."""
        mode = resolve_safety(self._config.current, requester.guild_id, requester.channel_nsfw)
        return replace(composed, request=replace(composed.request, check_safety=needs_check(mode)))

    @staticmethod
    def _job(job_id: str, composed: Composed, requester: Requester) -> Job:
        return Job.create(job_id, composed.request, user_id=requester.user_id, guild_id=requester.guild_id,
                          channel_id=requester.channel_id, role_ids=requester.role_ids,
                          cost_weight=composed.cost_weight, parent_channel_id=requester.parent_channel_id)

    async def with_image(self, drafted: Draft, image: bytes | None, filename: str = "image") -> Composed:
        """The request that will run, once the attachment (if any) is downloaded and checked."""
        if image is not None:
            problem = await asyncio.to_thread(image_problem, image, filename)
            if problem is not None:
                raise InvalidRequest([problem])
        return drafted.with_image(image)

    async def submit(self, composed: Composed, requester: Requester, *, kind: JobKind = "imagine",
                     parent_job_id: str | None = None, interaction: InteractionRef | None = None) -> JobRecord:
        """Store the job, then admit it; a refusal is recorded and re-raised for the user to see."""
        self.check_where(requester)  # buttons too: DMs may have been switched off since the result
        self._scheduler.check_accepting()  # during shutdown storage closes soon: store nothing new
        composed = self._with_safety(composed, requester)
        with self._scheduler.arriving():  # an idle GPU waits for it, so that requests sent together run together
            stored = await self._storage.create_job(
                composed.request, user_id=requester.user_id, guild_id=requester.guild_id or None,
                channel_id=requester.channel_id, role_ids=requester.role_ids, kind=kind, parent_job_id=parent_job_id,
                interaction=interaction,
            )
        self._checkpoints.reached("stored")
        job = self._job(stored.id, composed, requester)
        # A refusal raises here; the scheduler reports it to JobRecorder, which stores it (one writer
        # per transition: two writers raced into IllegalTransition and hid the refusal's message).
        self._scheduler.submit(job)
        self._checkpoints.reached("admitted")
        return stored

    def queue_place(self, job_id: str) -> tuple[int | None, float | None]:
        """(position, ETA in seconds) of a queued job; position None once it runs (or its guild is paused)."""
        return self._scheduler.position(job_id), self._scheduler.eta(job_id)

    async def record_status_message(self, job_id: str, message_id: int) -> None:
        self._checkpoints.reached("status posted")
        await self._storage.set_messages(job_id, status_message_id=message_id)
        self._checkpoints.reached("status recorded")

    def withdraw(self, job_id: str) -> None:
        """Take back a job nobody can see (its status message failed), refunding its charge."""
        with contextlib.suppress(JobNotFound):
            self._scheduler.cancel(job_id)

    # --- buttons ----------------------------------------------------------------------------------
    async def cancel(self, job_id: str, requester: Requester) -> None:
        """Cancel a queued job or interrupt a running one: its owner or a moderator of its server."""
        try:
            self._scheduler.cancel(job_id, by=requester)  # checks the requester against the live job
        except JobNotFound:
            # Not queued or running: say why in the words that fit (deleted, not yours, or finished).
            stored = await self._storage.require_job(job_id)
            requester.check_may_manage(stored.user_id, stored.guild_id or 0, self._config.current, "cancel")
            raise
        self._checkpoints.reached("cancel requested")
        await self._storage.record_cancel(job_id)  # stored before the cog says "Cancelled."

    async def delete(self, job_id: str, requester: Requester) -> None:
        """Delete a result (images removed, the record kept): its owner or a moderator of its server."""
        stored = await self._storage.require_job(job_id)
        requester.check_may_manage(stored.user_id, stored.guild_id or 0, self._config.current, "delete")
        await self._storage.mark_deleted(job_id)

    async def follow_up(self, action: FollowUpAction, job_id: str, index: int | None,
                        requester: Requester) -> FollowUp | FullSizeInstead:
        """U (2x upscale of one image), V (variations of one image) or reroll (new seed) of a finished job,
        re-validated against today's config and checked again against today's content rules."""
        parent = await self._storage.require_job(job_id)
        if parent.status != "done" or parent.deleted_at is not None:
            raise InvalidRequest(["that image is no longer available; run /imagine again"])
        config = self._config.current
        content = self._gate.content_for(config, requester)
        request = parent.request
        self._gate.check(content, requester, request.prompt, content.members_part(request.negative_prompt))
        negative = content.with_default_negative(request.negative_prompt)  # today's default, once
        if action == "reroll":
            return FollowUp(derive(config, request, seed=None, negative_prompt=negative), "reroll")
        if index is None:
            raise InvalidRequest([f"button {action!r} needs an image number; allowed: the images shown"])
        nsfw = await self._withheld_check(config, parent, index, requester)
        image = await self._storage.load_result_image(job_id, index)
        if image is None:
            raise InvalidRequest([self._gone(parent, index)])
        if action == "v":
            return FollowUp(derive(config, request, init_image=image, strength=VARIATION_STRENGTH, seed=None,
                                   negative_prompt=negative,
                                   steps=img2img_steps(request.steps, VARIATION_STRENGTH)), "variation")
        width, height = request.width or 0, request.height or 0
        try:
            composed = derive(config, request, init_image=image, width=width * 2, height=height * 2,
                              strength=UPSCALE_STRENGTH, count=1, seed=parent.seeds[index], negative_prompt=negative,
                              steps=img2img_steps(request.steps, UPSCALE_STRENGTH))
        except InvalidRequest as exc:
            return FullSizeInstead(parent.user_id, index, image, parent.seeds[index], exc.problems[0], nsfw=nsfw)
        return FollowUp(composed, "upscale")

    async def _withheld_check(self, config: AppConfig, parent: JobRecord, index: int, requester: Requester) -> bool:
        """Whether the checker flagged image ``index``; ImageWithheld when today's mode here withholds it (nothing
        is made from an image nobody may see)."""
        flagged = any(result.nsfw for result in await self._storage.list_results(parent.id) if result.index == index)
        if flagged and resolve_safety(config, requester.guild_id, requester.channel_nsfw) == "refuse":
            raise ImageWithheld(index)
        return flagged

    def _gone(self, parent: JobRecord, index: int) -> str:
        """Why image ``index`` of ``parent`` cannot be loaded: purged after its retention time, or never there."""
        keep_days = self._config.current.retention.images_days
        age = datetime.fromtimestamp(self._clock.time(), UTC) - parent.created_at
        if keep_days is not None and age >= timedelta(days=keep_days):
            return f"that image is no longer available (images are kept for {keep_days:g} days); run /imagine again"
        return f"image {index + 1} of that request is not stored; allowed: the images shown"

    # --- restarts ---------------------------------------------------------------------------------
    async def resume(self, adopt_status: Callable[[JobRecord], Awaitable[int | None]]) -> tuple[
            list[JobRecord], list[JobRecord]]:
        """Readmit jobs that were queued or running when the bot stopped.

        Returns (resumed, dropped); a dropped job's record says why (its ``error``): it was never shown,
        or today's config no longer allows it (its model was removed, its size now exceeds the limits).
        ``adopt_status`` finds a status message that was posted but not recorded (the bot stopped in
        between): such a job resumes on that message.
        """
        await self._rebuild_quotas()
        resumed: list[JobRecord] = []
        dropped: list[JobRecord] = []
        config = self._config.current
        for stored in await self._storage.requeue_interrupted():
            if stored.kind not in IMAGINE_KINDS:
                continue
            if stored.status_message_id is None and await adopt_status(stored) is None:
                # Stopped before showing it: its owner saw only an error or nothing, so don't run it.
                dropped.append(await self._storage.update_status(stored.id, "dropped", error=DROPPED_NEVER_SHOWN))
                continue
            if stored.kind in ("upscale", "variation") and stored.request.init_image is None:
                # 🗑 on the parent removed its copy too
                dropped.append(await self._storage.update_status(stored.id, "dropped", error=DROPPED_INPUT_GONE))
                continue
            try:
                name, model = resolve_model(config, stored.request.model)
                request = validate(stored.request, name, model, loras=config.generation)
                # The channel's age restriction is not known here: its server's mode decides, and a check that
                # was asked for stays asked for.
                mode = resolve_safety(config, stored.guild_id or 0, channel_nsfw=False)
                request = replace(request, check_safety=request.check_safety or needs_check(mode))
            except InvalidRequest as exc:
                reason = dropped_no_longer_fits(exc)
                dropped.append(await self._storage.update_status(stored.id, "dropped", error=reason))
                continue
            job = Job.create(stored.id, request, user_id=stored.user_id, guild_id=stored.guild_id or 0,
                             channel_id=stored.channel_id or 0, role_ids=frozenset(stored.role_ids),
                             cost_weight=model.cost_weight)
            self._scheduler.submit(job, readmit=True)
            resumed.append(stored)
        if resumed or dropped:
            _log.info("resumed %d job(s) after restart, dropped %d", len(resumed), len(dropped))
        return resumed, dropped

    async def _rebuild_quotas(self) -> None:
        """Daily quotas live in memory: count what each user made earlier in their guild's quota day, so that
        a restart does not hand everybody a fresh quota. The database sums the images per guild and user,
        once per distinct start of the day (one query unless guilds set other reset hours or zones)."""
        scheduler = self._scheduler
        starts = {scheduler.quota_day_start(guild_id) for guild_id in (None, *self._config.current.guilds)}
        for start in sorted(starts):
            for made in await self._storage.images_made_since(datetime.fromtimestamp(start, UTC)):
                guild_id = made.guild_id or 0
                if scheduler.quota_day_start(guild_id) == start:
                    scheduler.restore_usage(guild_id, made.user_id, made.images)
