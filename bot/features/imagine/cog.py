"""/imagine and the buttons under its results. Thin: parse, call the imagine service, show."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Callable
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.config_store import ConfigStore
from bot.core.policy import SafetyMode
from bot.core.safety import resolve_safety
from bot.discord_ui.channel_access import ChannelAccess
from bot.discord_ui.custom_ids import Action
from bot.discord_ui.images import EncodedImage, blurred, encode_to_fit, read_parameters, spoiler_name, upload_limit
from bot.discord_ui.interactions import NO_MENTIONS, requester_of
from bot.discord_ui.outbox import Outbox
from bot.discord_ui.presenter import DiscordPresenter, StatusTarget
from bot.discord_ui.replies import reply_error
from bot.discord_ui.texts import CANCELLED_REPLY, MESSAGE_LIMIT, STARTING_TEXT, full_size_text, safety_note
from bot.features.imagine.compose import Attachment, Composed, loras_for, resolve_model
from bot.features.imagine.flags import Options, read_prompt_flags
from bot.features.imagine.recorder import JobRecorder
from bot.features.imagine.service import FullSizeInstead, ImagineService
from bot.features.imagine.views import COG_NAME, status_view
from bot.scheduler import JobEvents
from bot.storage import InteractionRef, JobKind
from generation.errors import InvalidRequest
from generation.imagefiles import open_image
from generation.request import MAX_SEED

_log = logging.getLogger(__name__)
UNLOAD_WAIT_S = 10.0  # how long unloading waits for interactions still showing their job


def _choices(names: list[str], current: str) -> list[app_commands.Choice[str]]:
    wanted = current.lower()
    return [app_commands.Choice(name=name, value=name) for name in names if wanted in name.lower()][:25]


class ImagineCog(commands.Cog, name=COG_NAME):
    def __init__(self, config: ConfigStore, service: ImagineService, presenter: DiscordPresenter, *,
                 events: JobEvents, recorder: JobRecorder, outbox: Outbox, access: ChannelAccess) -> None:
        self._config = config
        self._access = access
        self._service = service
        self._presenter = presenter
        self._events = events
        self._recorder = recorder
        self._outbox = outbox
        self._unsubscribe: Callable[[], None] | None = None
        self._answering: set[asyncio.Task[Any]] = set()  # interactions between storing a job and attaching it

    @property
    def presenter(self) -> DiscordPresenter:
        """How this feature shows jobs on Discord (for diagnostics: ``presenter.live_jobs``)."""
        return self._presenter

    async def cog_load(self) -> None:
        # Subscribed for exactly as long as the cog is loaded: discord.py runs cog_unload on unload.
        self._unsubscribe = self._events.subscribe(self._recorder)

    async def cog_unload(self) -> None:
        # A job that ended before its status message was attached is shown by attach, in the interaction's own
        # task: let it finish its writes while storage is still open (a cancel mid-query strands a connection).
        answering = self._answering - {asyncio.current_task()}
        if answering:
            await asyncio.wait(answering, timeout=UNLOAD_WAIT_S)
        await self._outbox.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    @app_commands.command(name="imagine", description="Turn a prompt into images (flags: --ar 16:9 --seed 5 --no text)")
    @app_commands.describe(
        prompt="What to draw; Midjourney-style flags such as --ar 3:2 --seed 42 --no text work too",
        negative="What to keep out of the image", aspect="Aspect ratio", count="How many images (1-4)",
        steps="Denoising steps: more is slower and finer", guidance="How closely to follow the prompt (CFG scale)",
        seed="Seed for repeatable images",
        model="Which model", style="A style preset that wraps your prompt", image="Start from this image",
        strength="How much to change the image (0.05-1)",
        lora="A LoRA at its default weight; type <lora:NAME:WEIGHT> in the prompt for a weight or several",
    )
    async def imagine(
        self, interaction: discord.Interaction[Any], prompt: app_commands.Range[str, 1, 2000],
        negative: str | None = None, aspect: str | None = None, count: app_commands.Range[int, 1, 4] | None = None,
        steps: app_commands.Range[int, 1, 200] | None = None,
        guidance: app_commands.Range[float, 0.0, 30.0] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None, model: str | None = None, style: str | None = None,
        image: discord.Attachment | None = None, strength: app_commands.Range[float, 0.05, 1.0] | None = None,
        lora: str | None = None,
    ) -> None:
        requester = requester_of(interaction)
        self._service.check_where(requester)  # before the options and any download
        self._access.check(interaction)  # a channel where the bot could not post its result
        explicit = Options(negative=negative, aspect=aspect, count=count, steps=steps, guidance=guidance, seed=seed,
                           model=model, style=style, strength=strength, loras=((lora, None),) if lora else ())
        attachment = None if image is None else Attachment(image.filename, image.content_type, image.size)
        # Content rules and bad options fail before the download, and before anything is stored.
        drafted = self._service.draft(prompt, explicit, attachment, requester)
        if image is not None:
            # A request that admission would refuse (rate, quota, queue caps) costs no download either.
            await self._service.check(drafted, requester, image_coming=True)
            await interaction.response.defer(thinking=True)  # the download can outlast Discord's 3 s window
        try:
            data = None if image is None else await self._download(image)
            composed = await self._service.with_image(drafted, data, image.filename if image else "image")
            await self.submit_and_show(interaction, composed, kind="imagine")
        except Exception:
            if interaction.response.is_done():
                await self._drop_thinking(interaction)  # so the error reply that follows stays private
            raise

    @staticmethod
    async def _download(image: discord.Attachment) -> bytes:
        try:
            return await image.read()
        except discord.HTTPException as exc:
            _log.warning("attachment %s could not be downloaded: %s", image.filename, exc)  # the status is for us
            raise InvalidRequest(["the attachment could not be downloaded; please attach it again"]) from exc

    @staticmethod
    async def _drop_thinking(interaction: discord.Interaction[Any]) -> None:
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()

    @imagine.autocomplete("model")
    async def _model_names(self, interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        return _choices(self._config.current.generation.enabled_names(), current)

    @imagine.autocomplete("style")
    async def _style_names(self, interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        return _choices(sorted(self._config.current.bot.styles), current)

    @imagine.autocomplete("lora")
    async def _lora_names(self, interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        """Only the LoRAs made for the model chosen so far (the option, else a --model flag, else the default)."""
        config = self._config.current
        namespace = interaction.namespace
        typed, _ = read_prompt_flags(getattr(namespace, "prompt", None) or "")
        chosen = getattr(namespace, "model", None) or typed.options.model
        try:
            _, model = resolve_model(config, chosen)
        except InvalidRequest:  # not a configured model (yet): offer what fits the default one
            _, model = resolve_model(config, None)
        return _choices(loras_for(config.generation, model), current)

    @imagine.autocomplete("aspect")
    async def _aspects(self, interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        return _choices(list(self._config.current.bot.aspects), current)

    async def submit_and_show(self, interaction: discord.Interaction[Any], composed: Composed, *, kind: JobKind,
                              parent_job_id: str | None = None) -> None:
        """Admit the job (refusals raise before anything public is posted), then post its status message."""
        task = asyncio.current_task()
        if task is not None:
            self._answering.add(task)
        try:
            await self._submit_and_show(interaction, composed, kind=kind, parent_job_id=parent_job_id)
        finally:
            self._answering.discard(task)

    async def _submit_and_show(self, interaction: discord.Interaction[Any], composed: Composed, *, kind: JobKind,
                               parent_job_id: str | None) -> None:
        requester = requester_of(interaction)
        ref = InteractionRef(interaction.application_id, interaction.token, interaction.created_at)
        stored = await self._service.submit(composed, requester, kind=kind, parent_job_id=parent_job_id,
                                            interaction=ref)
        try:
            message_id, text = await self._post_status(interaction, stored.id)
            await self._service.record_status_message(stored.id, message_id)
        except Exception:
            await self._presenter.withdrawn(stored.id)  # the error reply that follows is its visible end
            self._service.withdraw(stored.id)  # nobody can see this job: never run it invisibly
            raise
        await self._presenter.attach(stored.id, StatusTarget(
            requester.user_id, requester.channel_id, ref, message_id, interaction.filesize_limit),
            posted_text=text)

    async def _post_status(self, interaction: discord.Interaction[Any], job_id: str) -> tuple[int, str]:
        """Post the job's status message: its id, and the text it shows."""
        position, eta = self._service.queue_place(job_id)
        text = self._presenter.queued_status(position, eta) if position else STARTING_TEXT
        if interaction.response.is_done():
            message = await interaction.edit_original_response(content=text, view=status_view(job_id),
                                                               allowed_mentions=NO_MENTIONS)
            return message.id, text
        callback = await interaction.response.send_message(text, view=status_view(job_id),
                                                           allowed_mentions=NO_MENTIONS)
        # The callback answer names the message: no extra GET @original, which an expiring token can fail.
        return callback.message_id or (await interaction.original_response()).id, text

    # --- buttons (views.py routes every click here) -----------------------------------------------
    async def on_button(self, interaction: discord.Interaction[Any], action: Action, job_id: str,
                        index: int | None) -> None:
        try:
            await self._on_button(interaction, action, job_id, index)
        except Exception as exc:
            await reply_error(interaction, exc)

    async def _on_button(self, interaction: discord.Interaction[Any], action: Action, job_id: str,
                         index: int | None) -> None:
        requester = requester_of(interaction)
        if action == "cancel":
            await self._service.cancel(job_id, requester)
            await interaction.response.send_message(CANCELLED_REPLY, ephemeral=True)
            return
        if action == "delete":
            await self._service.delete(job_id, requester)
            await interaction.response.defer()
            await interaction.delete_original_response()
            return
        self._access.check(interaction)  # a follow-up is a new job: shown in this channel too
        # Loading the image and storing the new job can outlast Discord's 3 s window: acknowledge first.
        await interaction.response.defer(thinking=True)
        try:
            plan = await self._service.follow_up(action, job_id, index, requester)
            if isinstance(plan, FullSizeInstead):
                mode = resolve_safety(self._config.current, requester.guild_id, requester.channel_nsfw)
                await self._send_full_image(interaction, plan, mode if plan.nsfw else "off")
            else:
                await self.submit_and_show(interaction, plan.composed, kind=plan.kind, parent_job_id=job_id)
        except Exception:
            await self._drop_thinking(interaction)  # so the error reply that follows stays private
            raise

    @staticmethod
    async def _send_full_image(interaction: discord.Interaction[Any], plan: FullSizeInstead, mode: SafetyMode) -> None:
        """The stored image at full size, as ``mode`` shows a flagged image (``off`` for one that is not flagged;
        ``refuse`` never gets here: the service withholds it)."""
        text = full_size_text(plan.index, plan.owner_id, plan.seed, plan.reason)
        if mode != "off":
            text = f"{text}\n{safety_note(mode, [plan.index], 1)}"[:MESSAGE_LIMIT]
        limit = upload_limit(interaction.filesize_limit)
        name = f"image_{plan.index + 1}"
        if mode == "blur" or len(plan.image) > limit:
            # Re-encoded (keeping the recipe) only to blur it, or when the PNG is too large for this server.
            def encode() -> EncodedImage:
                image = open_image(plan.image)
                shown = blurred(image) if mode == "blur" else image
                return encode_to_fit(shown, limit, read_parameters(plan.image) or "", basename=name)

            encoded = await asyncio.to_thread(encode)
            data, filename = encoded.data, encoded.filename
        else:
            data, filename = plan.image, f"{name}.png"
        if mode in ("blur", "spoiler"):
            filename = spoiler_name(filename)
        await interaction.edit_original_response(content=text, attachments=[discord.File(io.BytesIO(data), filename)],
                                                 allowed_mentions=NO_MENTIONS)
