"""The result message of a finished job, built the same way from a fresh result or from storage.

A fresh result carries its PNGs in memory (``ResultContent.pngs``, encoded once by ``result_files``): a single
image's upload is those bytes, and nothing is read back from storage. After a restart (or a failed post) the
outbox rebuilds the message from the stored PNGs, seeds, safety flags and request, so a re-post looks like the
first one. Decoding and encoding run in a thread.

The server's safety mode applies here, to what is uploaded, never to what is stored: an image the checker
flagged is blurred (``blur``), withheld (``refuse``: a notice in its grid cell, or no attachment at all) or
shown as made (``spoiler``, ``off``); with ``spoiler`` and ``blur`` the attachment is a spoiler.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from bot.core.policy import SafetyMode
from bot.discord_ui.images import (
    EncodedImage,
    blurred,
    encode_to_fit,
    make_grid,
    notice,
    read_parameters,
    spoiler_name,
    upload_limit,
)
from bot.discord_ui.result_files import result_basename
from bot.discord_ui.texts import SCALED_NOTE, kind_note, result_message_text, safety_note, sanitize_user_text
from bot.storage import JobRecord, Storage
from generation.request import GenerationRequest, GenerationResult

Upload = tuple[bytes, str]  # (data, filename): a fresh discord.File is built per request


@dataclass(frozen=True)
class ResultContent:
    request: GenerationRequest
    images: list[Image.Image]
    seeds: tuple[int, ...]
    total_s: float
    parameters: str
    warnings: tuple[str, ...] = ()
    nsfw: tuple[bool, ...] = ()  # the safety checker's flag per image; empty when they were not checked
    pngs: tuple[bytes, ...] = ()  # each image's PNG as stored (carrying its parameters); empty when not at hand

    @classmethod
    def of(cls, result: GenerationResult, pngs: Sequence[bytes] = ()) -> ResultContent:
        return cls(result.request, list(result.images), tuple(result.seeds), result.timings.total_s,
                   result.parameters_text(0), tuple(result.warnings), tuple(result.nsfw), tuple(pngs))

    def flagged(self, mode: SafetyMode) -> list[int]:
        """The images that ``mode`` treats: those the checker flagged, unless the mode is off."""
        return [] if mode == "off" else [index for index, flag in enumerate(self.nsfw) if flag]


async def stored_result(storage: Storage, stored: JobRecord) -> ResultContent | None:
    """The content of a done job from its stored PNGs; None when they are gone (deleted, purged)."""
    pngs = []
    for index in range(len(stored.seeds)):
        png = await storage.load_result_image(stored.id, index)
        if png is None:
            return None
        pngs.append(png)
    if not pngs:
        return None

    def decode() -> tuple[list[Image.Image], str]:
        images = []
        for png in pngs:
            with Image.open(io.BytesIO(png), formats=["PNG"]) as image:
                images.append(image.convert("RGB"))
        return images, read_parameters(pngs[0]) or ""

    images, parameters = await asyncio.to_thread(decode)
    total_s = sum(float(value) for value in stored.timings.values())
    flags = {result.index: bool(result.nsfw) for result in await storage.list_results(stored.id)}
    nsfw = tuple(flags.get(index, False) for index in range(len(images)))
    return ResultContent(stored.request, images, stored.seeds, total_s, parameters, nsfw=nsfw, pngs=tuple(pngs))


def veiled(image: Image.Image, mode: SafetyMode) -> Image.Image:
    """A flagged image as ``mode`` shows it: blurred, a notice instead (refuse), or as made (spoiler, off)."""
    if mode == "blur":
        return blurred(image)
    return notice(image.size) if mode == "refuse" else image


async def result_message(stored: JobRecord, content: ResultContent, attachment_limit: int | None, *,
                         safety: SafetyMode = "off", grid: EncodedImage | None = None) -> tuple[str, list[Upload]]:
    """The text and the one attachment (a grid fitted to the upload limit) of a job's result message, with the
    server's safety mode applied to flagged images. ``grid``: the upload already encoded for this limit
    (``ResultFiles.grid``), used only when no image is flagged under ``safety``."""
    request = content.request
    limit = upload_limit(attachment_limit)
    basename = result_basename(stored.id)
    flagged = content.flagged(safety)
    encoded: EncodedImage | None
    # One image: its PNG (stored, with the same parameters) is the upload; don't encode it twice.
    saved = content.pngs[0] if len(content.images) == 1 and len(content.pngs) == 1 and not flagged else None
    if saved is not None and len(saved) <= limit:
        encoded = EncodedImage(saved, f"{basename}.png", "PNG", scaled=False)
    elif grid is not None and not flagged:
        encoded = grid  # encoded while storage wrote the images
    elif safety == "refuse" and len(flagged) == len(content.images):
        encoded = None  # every image withheld: the text says so, and nothing is attached
    else:
        images = [veiled(image, safety) if index in flagged else image for index, image in enumerate(content.images)]
        encoded = await asyncio.to_thread(
            lambda: encode_to_fit(make_grid(images), limit, content.parameters, basename=basename))
    note = kind_note(stored.kind)
    if flagged:
        note = (note + "\n" if note else "") + safety_note(safety, flagged, len(content.images))
    if encoded is not None and encoded.scaled:
        note = (note + "\n" if note else "") + SCALED_NOTE
    if content.warnings:
        note = (note + "\n" if note else "") + "\n".join(
            f"⚠ {sanitize_user_text(warning)}" for warning in content.warnings)  # warnings quote the prompt
    text = result_message_text(
        request.prompt, stored.user_id, content.seeds, request.model or "",
        (request.width or 0, request.height or 0), request.steps or 0, content.total_s,
        negative=request.negative_prompt, guidance=request.guidance,
        strength=request.strength if request.mode == "img2img" else None, loras=request.loras, note=note,
    )
    if encoded is None:
        return text, []
    hidden = flagged and safety in ("blur", "spoiler")
    return text, [(encoded.data, spoiler_name(encoded.filename) if hidden else encoded.filename)]
