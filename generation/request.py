"""What a caller asks for (GenerationRequest), what it gets back (GenerationResult), and validation.

This module imports neither torch nor diffusers: the bot and the scheduler use it to validate
requests, estimate cost and batch compatible jobs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from PIL import Image

from generation.config import LORA_WEIGHT_LIMIT, SCHEDULERS, LoraConfig, ModelConfig
from generation.errors import InvalidRequest
from generation.imagefiles import quick_png
from generation.samplers import sampler_name

MAX_IMAGES_PER_REQUEST = 4
MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**32 - 1
LCM_MAX_STEPS = 50
MAX_INIT_IMAGE_SIDE = 4096  # input images larger than this are refused before they are decoded
Mode = Literal["txt2img", "img2img"]
LoraChoice = tuple[str, float]  # (configured LoRA name, weight)


class LoraCatalog(Protocol):
    """The configured LoRAs and the per-request cap, as ``validate`` reads them (``GenerationConfig`` is one)."""

    @property
    def loras(self) -> Mapping[str, LoraConfig]: ...

    @property
    def max_loras_per_request(self) -> int: ...


@dataclass(frozen=True)
class GenerationRequest:
    """One user's ask. ``None`` fields take the model's defaults in ``validate``."""

    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    count: int = 1
    scheduler: str | None = None
    model: str | None = None
    init_image: bytes | None = field(default=None, repr=False)
    strength: float | None = None
    loras: tuple[LoraChoice, ...] = ()
    # Run the executor's safety checker on these images (``GenerationResult.nsfw``). Not in the compatibility
    # key: the runner checks each image on its own, so batch-mates with and without a check share a call.
    check_safety: bool = False

    @property
    def mode(self) -> Mode:
        return "img2img" if self.init_image is not None else "txt2img"

    def seeds(self) -> list[int]:
        """The seed of each image: image i uses ``seed + i`` so each image is reproducible alone."""
        if self.seed is None:
            raise ValueError("seeds() needs a validated request (seed filled in)")
        return [(self.seed + index) % (MAX_SEED + 1) for index in range(self.count)]


@dataclass(frozen=True)
class CompatibilityKey:
    """Requests with equal keys can share one pipeline call."""

    model: str
    width: int
    height: int
    steps: int
    scheduler: str
    guidance: float
    mode: Mode
    strength: float | None
    loras: tuple[LoraChoice, ...] = ()  # active_loras(): one pipeline call has one set of adapters


def active_loras(request: GenerationRequest) -> tuple[LoraChoice, ...]:
    """The LoRAs that change the images, sorted: a weight of 0 is the same as leaving the LoRA out."""
    return tuple(sorted((name, weight) for name, weight in request.loras if weight != 0))


def weight_text(weight: float) -> str:
    """A weight as short as it reads back exactly: 0.8, 1, -0.25."""
    short = f"{weight:g}"
    return short if float(short) == weight else repr(weight)


def lora_tags(loras: Sequence[LoraChoice]) -> str:
    """A1111's prompt syntax for LoRAs: ``<lora:ink:0.8> <lora:fur:1>``."""
    return " ".join(f"<lora:{name}:{weight_text(weight)}>" for name, weight in loras)


def compatibility_key(request: GenerationRequest) -> CompatibilityKey:
    if request.width is None or request.height is None or request.steps is None or request.guidance is None:
        raise ValueError("compatibility_key() needs a validated request (defaults filled in)")
    return CompatibilityKey(
        model=request.model or "",
        width=request.width,
        height=request.height,
        steps=request.steps,
        scheduler=request.scheduler or "default",
        guidance=request.guidance,
        mode=request.mode,
        strength=request.strength if request.mode == "img2img" else None,
        loras=active_loras(request),
    )


def _range_problem(name: str, value: float, low: float, high: float) -> str | None:
    if low <= value <= high:
        return None
    return f"{name} {value:g} is out of range; allowed: {low:g} to {high:g}"


def _lora_problems(request: GenerationRequest, model_name: str, family: str, catalog: LoraCatalog | None) -> list[str]:
    configured: Mapping[str, LoraConfig] = catalog.loras if catalog is not None else {}
    cap = catalog.max_loras_per_request if catalog is not None else 0
    fitting = ", ".join(sorted(name for name, lora in configured.items() if family in lora.families)) or "none"
    problems = []
    if len(request.loras) > cap:
        problems.append(f"{len(request.loras)} LoRAs given; allowed: at most {cap} per request")
    seen: set[str] = set()
    for name, weight in request.loras:
        lora = configured.get(name)
        if name in seen:
            problems.append(f"LoRA {name!r} is given twice; allowed: once per request")
        elif lora is None:
            problems.append(f"unknown LoRA {name!r}; LoRAs for model {model_name}: {fitting}")
        elif family not in lora.families:
            problems.append(f"LoRA {name!r} is made for {', '.join(lora.families)} models, not for model {model_name} "
                            f"({family}); LoRAs for model {model_name}: {fitting}")
        seen.add(name)
        if not (math.isfinite(weight) and abs(weight) <= LORA_WEIGHT_LIMIT):
            problems.append(f"LoRA {name!r} weight {weight:g} is out of range; "
                            f"allowed: {-LORA_WEIGHT_LIMIT:g} to {LORA_WEIGHT_LIMIT:g}")
    return problems


def _with_trigger_words(prompt: str, request: GenerationRequest, catalog: LoraCatalog) -> str:
    """The prompt with each used LoRA's trigger words appended, unless the prompt already has them: so that
    validating a validated request (a reroll, a resume) adds nothing."""
    for name, _ in active_loras(request):
        for word in catalog.loras[name].trigger_words:
            if not re.search(rf"(?<!\w){re.escape(word)}(?!\w)", prompt, re.IGNORECASE):
                prompt = f"{prompt}, {word}"
    return prompt


def validate(
    request: GenerationRequest, model_name: str, limits: ModelConfig, *, random_seed: int | None = None,
    loras: LoraCatalog | None = None,
) -> GenerationRequest:
    """Fill defaults from the model and check every field; raise one InvalidRequest naming each problem.

    ``random_seed`` is used when the request has no seed, so callers decide where randomness comes from.
    ``loras`` holds the configured LoRAs (none without it); the prompt gets the trigger words of those used.
    """
    width = request.width if request.width is not None else limits.default_width
    height = request.height if request.height is not None else limits.default_height
    steps = request.steps if request.steps is not None else limits.default_steps
    guidance = request.guidance if request.guidance is not None else limits.default_guidance
    scheduler = request.scheduler or limits.scheduler
    problems: list[str] = _lora_problems(request, model_name, limits.family, loras) if request.loras else []
    prompt = request.prompt.strip()
    if not prompt:
        problems.append("prompt is empty; describe the image you want")
    length, added = len(request.prompt), ""
    if request.loras and not problems and loras is not None:
        with_words = _with_trigger_words(prompt, request, loras)
        if with_words != prompt:
            length, added = length + len(with_words) - len(prompt), " with the LoRAs' trigger words"
            prompt = with_words
    if length > MAX_PROMPT_CHARS:
        problems.append(f"prompt is {length} characters{added}; allowed: at most {MAX_PROMPT_CHARS}")
    if len(request.negative_prompt) > MAX_PROMPT_CHARS:
        problems.append(
            f"negative prompt is {len(request.negative_prompt)} characters; allowed: at most {MAX_PROMPT_CHARS}"
        )
    multiple = limits.size_multiple
    for name, value, maximum in (("width", width, limits.max_width), ("height", height, limits.max_height)):
        if not 64 <= value <= maximum:
            problems.append(f"{name} {value} is out of range; allowed: 64 to {maximum} for model {model_name}")
        elif value % multiple:
            problems.append(
                f"{name} {value} is not a multiple of {multiple}; "
                f"allowed: multiples of {multiple} (e.g. {value - value % multiple})"
            )
    if width * height > limits.max_pixels:
        problems.append(
            f"size {width}x{height} is {width * height:,} pixels; "
            f"allowed: at most {limits.max_pixels:,} pixels for model {model_name}"
        )
    for problem in (
        _range_problem("steps", steps, 1, limits.max_steps),
        _range_problem("guidance", guidance, 0.0, limits.max_guidance),
        _range_problem("count", request.count, 1, MAX_IMAGES_PER_REQUEST),
    ):
        if problem:
            problems.append(problem)
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
        problems.append(f"seed {request.seed} is out of range; allowed: 0 to {MAX_SEED}")
    if scheduler not in SCHEDULERS:
        problems.append(f"scheduler {scheduler!r} is unknown; allowed: {', '.join(SCHEDULERS)}")
    elif scheduler == "lcm" and steps > LCM_MAX_STEPS:  # LCM distils a 50-step schedule
        problems.append(f"steps {steps} is too many for the lcm scheduler; allowed: 1 to {LCM_MAX_STEPS}")
    strength = request.strength
    if request.init_image is not None:
        if not limits.img2img:
            problems.append(f"model {model_name} does not take an input image; allowed: text prompts only")
        strength = 0.75 if strength is None else strength
        problem = _range_problem("strength", strength, 0.05, 1.0)
        if problem:
            problems.append(problem)
        elif strength * steps < 1:
            least = math.ceil(100 / steps) / 100  # the smallest strength, in hundredths, that runs one step
            problems.append(f"strength {strength:g} with {steps} steps changes nothing; allowed: strength × steps "
                            f"of at least 1 (with {steps} steps: strength {least:g} or more)")
    elif strength is not None:
        problems.append("strength is only used with an input image; attach an image or leave strength out")
    if problems:
        raise InvalidRequest(problems)
    seed = request.seed if request.seed is not None else random_seed
    if seed is None:
        import secrets

        seed = secrets.randbelow(MAX_SEED + 1)
    return replace(
        request, prompt=prompt, width=width, height=height, steps=steps, guidance=guidance,
        scheduler=scheduler, model=model_name, seed=seed, strength=strength,
    )


def denoising_steps(request: GenerationRequest) -> int:
    """The denoising steps a validated request runs, as its requester counts them: its steps, or with an input
    image steps x strength (diffusers' own rounding; ``validate`` makes it at least 1)."""
    assert request.steps is not None
    if request.mode == "img2img" and request.strength is not None:
        return max(1, min(int(request.steps * request.strength), request.steps))
    return request.steps


def estimate_cost(request: GenerationRequest, cost_weight: float = 1.0) -> float:
    """Work units of a validated request: images x pixels/512^2 x steps/25 x the model's weight."""
    assert request.width is not None and request.height is not None and request.steps is not None
    steps = request.steps * (request.strength or 1.0) if request.mode == "img2img" else request.steps
    return request.count * (request.width * request.height / 512**2) * (steps / 25) * cost_weight


@dataclass(frozen=True)
class Timings:
    load_s: float = 0.0
    denoise_s: float = 0.0
    decode_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.load_s + self.denoise_s + self.decode_s


@dataclass(frozen=True)
class ProgressEvent:
    """Step ``step`` of ``total`` finished for a batch, counted as the member asked: ``total`` is the request's
    ``denoising_steps`` (its steps; with an input image, steps x strength) and ``step`` runs 1 to ``total``
    (the pipeline's own count, which PNDM's warm-up step changes, is scaled to it); a call retried after
    running out of memory starts again at 1.

    ``previews`` holds, on preview steps, one cheap look per batch member (its first image; None
    for members that are done or cancelled), empty otherwise. ``preview`` is set only when the batch
    has a single member, so one user's picture is never shown to another by accident.

    ``moved`` is set by a remote executor once the batch's GPU worker stopped and another took it over: first
    with ``step`` 0 (it starts again), then on every later step of that batch.
    """

    step: int
    total: int
    preview: Image.Image | None = None
    previews: tuple[Image.Image | None, ...] = ()
    moved: bool = False


@dataclass(frozen=True)
class GenerationResult:
    """The images of one request, each with its seed, and the parameters that made them."""

    request: GenerationRequest  # validated: every field effective
    images: list[Image.Image]
    seeds: list[int]
    timings: Timings
    nsfw: list[bool] = field(default_factory=list)  # one flag per image where the safety checker ran; else empty
    warnings: list[str] = field(default_factory=list)
    # The model's own scheduler in A1111's words ("PNDM"), which ``scheduler: default`` ran: the runner knows it.
    model_sampler: str | None = None

    def parameters_text(self, index: int) -> str:
        """The widely read "parameters" text chunk: prompt, negative prompt, then key: value pairs."""
        request = self.request
        # A1111 keeps LoRAs in the prompt as <lora:name:weight>; reading them back there restores them.
        lines = [f"{request.prompt} {lora_tags(request.loras)}" if request.loras else request.prompt]
        if request.negative_prompt:
            lines.append(f"Negative prompt: {request.negative_prompt}")
        sampler = sampler_name(request.scheduler, self.model_sampler)  # never "default": tools can't read it
        pairs: list[tuple[str, object]] = [
            ("Steps", request.steps), ("Sampler", sampler), ("CFG scale", request.guidance),
            ("Seed", self.seeds[index]), ("Size", f"{request.width}x{request.height}"), ("Model", request.model),
        ]
        if sampler is None:  # the model's scheduler is unknown here: leave the field out rather than guess
            pairs.pop(1)
        if request.mode == "img2img":
            pairs.append(("Denoising strength", request.strength))
        lines.append(", ".join(f"{key}: {value}" for key, value in pairs))
        return "\n".join(lines)

    def png_bytes(self, index: int, *, compress_level: int = 6) -> bytes:
        """Image ``index`` as PNG carrying its parameters, so a saved file keeps its recipe.

        ``compress_level`` 1 (what the bot stores) is about twice as fast as 6 (``quick_png``)."""
        return quick_png(self.images[index], self.parameters_text(index), level=compress_level)
