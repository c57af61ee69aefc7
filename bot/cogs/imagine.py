"""/imagine and the buttons under its results. Thin: parse, hand to the service, show."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands
from PIL import Image

from bot.buttons import status_view
from bot.compose import MAX_INIT_IMAGE_BYTES, Composed, compose, derive
from bot.custom_ids import Action
from bot.flags import Options
from bot.presenter import NO_MENTIONS, StatusTarget
from bot.render import encode_to_fit, queued_text, read_parameters, sanitize_user_text, upload_limit
from bot.replies import reply_error
from bot.service import Requester
from bot.storage import InteractionRef, JobKind
from generation.errors import ImagineError, InvalidRequest
from generation.request import MAX_INIT_IMAGE_SIDE, MAX_SEED

if TYPE_CHECKING:
    from bot.app import ImagineBot

_log = logging.getLogger(__name__)
UPSCALE_STRENGTH = 0.3
VARIATION_STRENGTH = 0.6


def requester_of(interaction: discord.Interaction[Any]) -> Requester:
    member = interaction.user
    roles = frozenset(role.id for role in member.roles) if isinstance(member, discord.Member) else frozenset()
    return Requester(user_id=member.id, guild_id=interaction.guild_id or 0, channel_id=interaction.channel_id or 0,
                     role_ids=roles, is_admin=bool(interaction.guild_id and interaction.permissions.manage_guild))


def image_problem(data: bytes, filename: str) -> str | None:
    """Why ``data`` cannot be an input image, or None (a content type is only the uploader's claim)."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            if max(picture.size) > MAX_INIT_IMAGE_SIDE:  # known before decoding: refuse bombs early
                return (f"the attachment {filename!r} is {picture.width}x{picture.height}; allowed: at most "
                        f"{MAX_INIT_IMAGE_SIDE} pixels on each side")
            picture.verify()
    except Exception:  # PIL raises many types for broken files
        return f"the attachment {filename!r} could not be read as an image; allowed: PNG, JPEG or WebP"
    return None


def img2img_steps(steps: int | None, strength: float) -> int:
    """Steps for an image-to-image follow-up: at least one denoising step must run (strength x steps >= 1),
    which few-step models (2-4 steps) would otherwise miss."""
    return max(steps or 1, math.ceil(1 / strength - 1e-9))


def _choices(names: list[str], current: str) -> list[app_commands.Choice[str]]:
    wanted = current.lower()
    return [app_commands.Choice(name=name, value=name) for name in names if wanted in name.lower()][:25]


class ImagineCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Turn a prompt into images (flags: --ar 16:9 --seed 5 --no text)")
    @app_commands.describe(
        prompt="What to draw; Midjourney-style flags such as --ar 3:2 --seed 42 --no text work too",
        negative="What to keep out of the image", aspect="Aspect ratio", count="How many images (1-4)",
        steps="Denoising steps", guidance="How closely to follow the prompt (CFG scale)",
        seed="Seed for repeatable images",
        model="Which model", style="A style preset that wraps your prompt", image="Start from this image",
        strength="How much to change the image (0.05-1)",
    )
    async def imagine(
        self, interaction: discord.Interaction[Any], prompt: app_commands.Range[str, 1, 2000],
        negative: str | None = None, aspect: str | None = None, count: app_commands.Range[int, 1, 4] | None = None,
        steps: app_commands.Range[int, 1, 200] | None = None,
        guidance: app_commands.Range[float, 0.0, 30.0] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None, model: str | None = None, style: str | None = None,
        image: discord.Attachment | None = None, strength: app_commands.Range[float, 0.05, 1.0] | None = None,
    ) -> None:
        explicit = Options(negative=negative, aspect=aspect, count=count, steps=steps, guidance=guidance, seed=seed,
                           model=model, style=style, strength=strength)
        config = self.bot.config.current
        init_image: bytes | None = None
        if image is not None:
            if not (image.content_type or "").startswith("image/"):
                raise InvalidRequest([f"the attachment {image.filename!r} is not an image; allowed: PNG, JPEG or WebP"])
            if image.size > MAX_INIT_IMAGE_BYTES:
                raise InvalidRequest([f"the attachment is {image.size / 1e6:.1f} MB; allowed: at most "
                                      f"{MAX_INIT_IMAGE_BYTES // 2**20} MiB"])
            # Fail fast, before the slow download, on bad options (b"" stands in for the image so that
            # image-only options such as strength validate).
            compose(config, prompt, explicit, init_image=b"")
            await interaction.response.defer(thinking=True)
        try:
            if image is not None:
                try:
                    init_image = await image.read()
                except discord.HTTPException as exc:
                    raise InvalidRequest(
                        [f"the attachment could not be downloaded ({exc.status}); please attach it again"]) from exc
            if init_image is not None and image is not None:
                problem = await asyncio.to_thread(image_problem, init_image, image.filename)
                if problem is not None:
                    raise InvalidRequest([problem])
            composed = compose(config, prompt, explicit, init_image=init_image)
            await self.submit_and_show(interaction, composed, kind="imagine")
        except Exception:
            if interaction.response.is_done():
                await self._drop_thinking(interaction)
            raise

    @staticmethod
    async def _drop_thinking(interaction: discord.Interaction[Any]) -> None:
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()

    @imagine.autocomplete("model")
    async def _model_names(self, interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        return _choices(sorted(self.bot.config.current.generation.models), current)

    @imagine.autocomplete("style")
    async def _style_names(self, interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        return _choices(sorted(self.bot.config.current.bot.styles), current)

    @imagine.autocomplete("aspect")
    async def _aspects(self, interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        return _choices(list(self.bot.config.current.bot.aspects), current)

    async def submit_and_show(self, interaction: discord.Interaction[Any], composed: Composed, *, kind: JobKind,
                              parent_job_id: str | None = None) -> None:
        """Admit the job (refusals raise before anything public is posted), then post its status message."""
        requester = requester_of(interaction)
        ref = InteractionRef(interaction.application_id, interaction.token, interaction.created_at)
        stored = await self.bot.service.submit(composed, requester, kind=kind, parent_job_id=parent_job_id,
                                               interaction=ref)
        try:
            message_id = await self._post_status(interaction, stored.id)
            await self.bot.service.storage.set_messages(stored.id, status_message_id=message_id)
        except Exception:
            # Nobody can see this job: take it back (refunding its charge) rather than run it invisibly.
            with contextlib.suppress(ImagineError):
                self.bot.service.scheduler.cancel(stored.id)
            raise
        await self.bot.presenter.attach(stored.id, StatusTarget(
            requester.user_id, requester.channel_id, ref, message_id, interaction.filesize_limit))

    async def _post_status(self, interaction: discord.Interaction[Any], job_id: str) -> int:
        position = self.bot.service.scheduler.position(job_id)
        text = queued_text(position, self.bot.service.scheduler.eta(job_id)) if position else "Starting…"
        if interaction.response.is_done():
            message = await interaction.edit_original_response(content=text, view=status_view(job_id),
                                                               allowed_mentions=NO_MENTIONS)
            return message.id
        callback = await interaction.response.send_message(text, view=status_view(job_id),
                                                           allowed_mentions=NO_MENTIONS)
        # The callback answer names the message: no extra GET @original, which an expiring token can fail.
        return callback.message_id or (await interaction.original_response()).id

    # --- buttons --------------------------------------------------------------------------------
    async def on_button(self, interaction: discord.Interaction[Any], action: Action, job_id: str,
                        index: int | None) -> None:
        try:
            await self._on_button(interaction, action, job_id, index)
        except Exception as exc:
            await reply_error(interaction, exc)

    async def _on_button(self, interaction: discord.Interaction[Any], action: Action, job_id: str,
                         index: int | None) -> None:
        service = self.bot.service
        requester = requester_of(interaction)
        if action == "cancel":
            await service.owned_job(job_id, requester, "cancel")
            service.cancel(job_id, requester)
            await interaction.response.send_message("Cancelled.", ephemeral=True)
            return
        if action == "delete":
            await service.owned_job(job_id, requester, "delete")
            await service.storage.mark_deleted(job_id)
            await interaction.response.defer()
            await interaction.delete_original_response()
            return
        # Loading the image and storing the new job can outlast Discord's 3 s window: acknowledge first.
        await interaction.response.defer(thinking=True)
        try:
            await self._follow_up(interaction, action, job_id, index)
        except Exception:
            await self._drop_thinking(interaction)  # so the error reply that follows stays private
            raise

    async def _follow_up(self, interaction: discord.Interaction[Any], action: Action, job_id: str,
                         index: int | None) -> None:
        """U, V and reroll: a new job derived from a finished one."""
        service = self.bot.service
        parent = await service.storage.require_job(job_id)
        if parent.status != "done" or parent.deleted_at is not None:
            raise InvalidRequest(["that image is no longer available; run /imagine again"])
        config = self.bot.config.current
        if action == "reroll":
            await self.submit_and_show(interaction, derive(config, parent.request, seed=None), kind="reroll",
                                       parent_job_id=job_id)
            return
        assert index is not None
        image = await service.storage.load_result_image(job_id, index)
        if image is None:
            raise InvalidRequest([f"image {index + 1} of that request is not stored; allowed: the images shown"])
        if action == "v":
            composed = derive(config, parent.request, init_image=image, strength=VARIATION_STRENGTH, seed=None,
                              steps=img2img_steps(parent.request.steps, VARIATION_STRENGTH))
            await self.submit_and_show(interaction, composed, kind="variation", parent_job_id=job_id)
            return
        width, height = parent.request.width or 0, parent.request.height or 0
        try:
            composed = derive(config, parent.request, init_image=image, width=width * 2, height=height * 2,
                              strength=UPSCALE_STRENGTH, count=1, seed=parent.seeds[index],
                              steps=img2img_steps(parent.request.steps, UPSCALE_STRENGTH))
        except InvalidRequest as exc:
            await self._send_full_image(interaction, parent.user_id, index, image, parent.seeds[index], exc)
            return
        await self.submit_and_show(interaction, composed, kind="upscale", parent_job_id=job_id)

    @staticmethod
    async def _send_full_image(interaction: discord.Interaction[Any], owner_id: int, index: int, image: bytes,
                               seed: int, why: InvalidRequest) -> None:
        reason = sanitize_user_text(why.problems[0])
        text = (f"Image {index + 1} of <@{owner_id}>'s request at full size (seed {seed}). "
                f"A 2× upscale isn't available here: {reason}")
        limit = upload_limit(interaction.filesize_limit)
        if len(image) > limit:  # re-encode (keeping the recipe) only when the PNG is too large for this server
            encoded = await asyncio.to_thread(
                lambda: encode_to_fit(Image.open(io.BytesIO(image)), limit, read_parameters(image) or "",
                                      basename=f"image_{index + 1}"))
            file = discord.File(io.BytesIO(encoded.data), filename=encoded.filename)
        else:
            file = discord.File(io.BytesIO(image), filename=f"image_{index + 1}.png")
        await interaction.edit_original_response(content=text[:2000], attachments=[file],
                                                 allowed_mentions=NO_MENTIONS)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ImagineCog(bot))
