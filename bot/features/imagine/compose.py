"""Turn what a user typed (prompt, flags, slash options, an attachment) into a validated request.

Two steps, so that bad options are refused before a slow attachment download: ``draft`` parses and
checks everything it can while the image is still to come; ``Draft.with_image`` validates the request
that will run, with the downloaded image in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from bot.core.config import AppConfig
from bot.core.content import GuildContent
from bot.features.imagine.flags import (
    LoraAsked,
    Options,
    ParsedFlags,
    aspect_to_size,
    merge_options,
    read_prompt_flags,
)
from generation.config import GenerationConfig, ModelConfig
from generation.errors import ConfigError, InvalidRequest
from generation.imagefiles import ALLOWED_CONTENT_TYPES, ALLOWED_FORMATS, input_image_problem
from generation.request import MAX_INIT_IMAGE_SIDE, GenerationRequest, LoraCatalog, LoraChoice, validate

MAX_INIT_IMAGE_BYTES = 8 * 1024 * 1024
# Stands in for the image while it downloads, so that image-only options (strength) are checked now.
_IMAGE_TO_COME = b""
MIN_SIDE = 64  # generation.request.validate's smallest width and height


@dataclass(frozen=True)
class Composed:
    """A validated request and what the scheduler needs to price it."""

    request: GenerationRequest
    model: ModelConfig

    @property
    def cost_weight(self) -> float:
        return self.model.cost_weight


def resolve_model(config: AppConfig, name: str | None) -> tuple[str, ModelConfig]:
    """A configured model by name (users may only pick configured models, never raw sources)."""
    generation = config.generation
    if name is None:
        return generation.default_model, generation.models[generation.default_model]
    if name in generation.models and generation.models[name].enabled:
        return name, generation.models[name]
    allowed = ", ".join(generation.enabled_names())
    raise InvalidRequest([f"model {name!r} is not available; allowed: {allowed}"])


def loras_for(generation: GenerationConfig, model: ModelConfig) -> list[str]:
    """The configured LoRAs made for ``model``'s family, by name."""
    return sorted(name for name, lora in generation.loras.items() if model.family in lora.families)


def _weighted(generation: GenerationConfig, asked: tuple[LoraAsked, ...]) -> tuple[LoraChoice, ...]:
    """Each LoRA with its weight: the one typed, else its configured default (an unknown name is left for
    ``validate`` to refuse with the list of LoRAs that fit)."""
    def weight_of(name: str, weight: float | None) -> float:
        if weight is not None:
            return weight
        lora = generation.loras.get(name)
        return lora.default_weight if lora is not None else 0.0

    return tuple((name, weight_of(name, weight)) for name, weight in asked)


@dataclass(frozen=True)
class Attachment:
    """What Discord says of an attached file before it is downloaded (the content type is the uploader's claim)."""

    filename: str
    content_type: str | None
    size: int


@dataclass(frozen=True)
class Draft:
    """A parsed request whose image (if any) is still to come; every option is already checked."""

    request: GenerationRequest
    model_name: str
    model: ModelConfig
    loras: LoraCatalog  # the configured LoRAs when it was drafted, like ``model``

    def priced(self, image_coming: bool) -> Composed:
        """The request as it will run, with a stand-in for an image still to come: what admission prices."""
        request = replace(self.request, init_image=_IMAGE_TO_COME if image_coming else None)
        return Composed(validate(request, self.model_name, self.model, loras=self.loras), self.model)

    def with_image(self, init_image: bytes | None) -> Composed:
        """The request that will run, validated with its image (or without one)."""
        request = replace(self.request, init_image=init_image)
        return Composed(validate(request, self.model_name, self.model, loras=self.loras), self.model)


def draft(config: AppConfig, prompt_text: str, explicit: Options, *, attachment: Attachment | None = None,
          content: GuildContent | None = None) -> Draft:
    """Parse flags out of the prompt, let explicit options win, apply style and aspect, and check it all.
    ``content``: the server's content settings, whose default negative prompt is added.

    Raises one ``InvalidRequest`` listing every problem, before anything is downloaded."""
    if attachment is not None and (wrong_file := attachment_problems(attachment)):
        raise InvalidRequest(wrong_file)  # the file itself is wrong: options don't matter yet
    flags, problems = read_prompt_flags(prompt_text)  # bad flags are reported with every other problem
    parsed: ParsedFlags = merge_options(flags, explicit)
    options = parsed.options
    try:
        model_name, model = resolve_model(config, options.model)
    except InvalidRequest as exc:
        raise InvalidRequest(problems + exc.problems) from None  # the rest is checked against the model
    prompt = parsed.prompt
    if options.style is not None:
        template = config.bot.styles.get(options.style)
        if template is None:
            allowed = ", ".join(sorted(config.bot.styles)) or "(none configured)"
            problems.append(f"style {options.style!r} is unknown; allowed: {allowed}")
        else:
            prompt = template.replace("{prompt}", prompt)
    width = height = None
    if options.size is not None:
        width, height = options.size
    elif options.aspect is not None:
        try:
            width, height = aspect_to_size(
                options.aspect, model.default_width * model.default_height, model.size_multiple,
                configured=_aspects_for(config, model),
            )
        except InvalidRequest as exc:
            problems.extend(exc.problems)
    negative = options.negative or ""
    if content is not None:
        negative = content.with_default_negative(negative)
    request = GenerationRequest(
        prompt=prompt, negative_prompt=negative, width=width, height=height, steps=options.steps,
        guidance=options.guidance, seed=options.seed, count=options.count or 1, model=model_name,
        strength=options.strength, loras=_weighted(config.generation, options.loras),
    )
    try:
        validate(replace(request, init_image=_IMAGE_TO_COME if attachment is not None else None), model_name, model,
                 loras=config.generation)
    except InvalidRequest as exc:
        problems.extend(exc.problems)
    if problems:
        raise InvalidRequest(problems)
    return Draft(request, model_name, model, config.generation)


def typed_prompt(prompt_text: str, explicit: Options) -> str:
    """The prompt as the member wrote it, without its flags and LoRA tags (what a length limit counts)."""
    flags, _ = read_prompt_flags(prompt_text)
    return merge_options(flags, explicit).prompt


def attachment_problems(attachment: Attachment) -> list[str]:
    """What is wrong with an attachment judged by what Discord says of it, before downloading it."""
    content_type = (attachment.content_type or "").split(";")[0].strip().lower()
    if not content_type.startswith("image/"):
        return [f"the attachment {attachment.filename!r} is not an image; allowed: {ALLOWED_FORMATS}"]
    if content_type not in ALLOWED_CONTENT_TYPES:
        return [f"the attachment {attachment.filename!r} is {content_type}; allowed: {ALLOWED_FORMATS}"]
    if attachment.size > MAX_INIT_IMAGE_BYTES:
        return [f"the attachment is {attachment.size / 1e6:.1f} MB; allowed: at most "
                f"{MAX_INIT_IMAGE_BYTES // 2**20} MiB"]
    return []


def image_problem(data: bytes, filename: str) -> str | None:
    """Why downloaded ``data`` cannot be an input image, or None. CPU work: run it in a thread.

    The content type was the uploader's claim: the bytes must be PNG, JPEG or WebP themselves, and no
    other format's decoder (EPS would run Ghostscript) is ever tried on them."""
    if len(data) > MAX_INIT_IMAGE_BYTES:
        return (f"the input image is {len(data) / 1e6:.1f} MB; "
                f"allowed: at most {MAX_INIT_IMAGE_BYTES // 2**20} MiB")
    problem = input_image_problem(data, MAX_INIT_IMAGE_SIDE)
    if problem is None:
        return None
    if problem.kind == "too_large":
        width, height = problem.size
        return (f"the attachment {filename!r} is {width}x{height}; allowed: at most "
                f"{MAX_INIT_IMAGE_SIDE} pixels on each side")
    if problem.kind == "other_format":  # a known other format is named; anything else is broken or no image
        return f"the attachment {filename!r} is {problem.other}; allowed: {ALLOWED_FORMATS}"
    return f"the attachment {filename!r} could not be read as an image; allowed: {ALLOWED_FORMATS}"


def _aspects_for(config: AppConfig, model: ModelConfig) -> dict[str, str]:
    """Configured aspect sizes, rescaled to the model's native pixel count (SDXL is 1024², SD 1.5 512²)."""
    base = model.default_width * model.default_height
    scaled: dict[str, str] = {}
    for ratio, size in config.bot.aspects.items():
        width, height = (int(part) for part in size.split("x"))
        factor = math.sqrt(base / (width * height)) if width * height else 1.0
        # Never below the smallest side a model accepts: 16:9 at a 64x64 budget would be 88x48, refused.
        factor = max(factor, MIN_SIDE / max(1, min(width, height)))
        multiple = model.size_multiple
        scaled[ratio] = f"{max(multiple, round(width * factor / multiple) * multiple)}x" \
                        f"{max(multiple, round(height * factor / multiple) * multiple)}"
    return scaled


def derive(config: AppConfig, parent: GenerationRequest, **changes: object) -> Composed:
    """A follow-up request (reroll, variation, upscale) re-validated against today's config."""
    try:
        _, model = resolve_model(config, parent.model)
    except InvalidRequest as exc:
        raise InvalidRequest([f"{exc.problems[0]} (the model of the original image was removed)"]) from exc
    request = replace(parent, **changes)  # type: ignore[arg-type]
    try:
        return Composed(validate(request, parent.model or "", model, loras=config.generation), model)
    except ConfigError as exc:
        raise InvalidRequest([str(exc)]) from exc
