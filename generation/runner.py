"""The synchronous core: run one batch of compatible requests as one pipeline call.

``Runner.run`` is plain blocking code, usable from the CLI, a worker process, or the executor's
worker thread. Images are split into pipeline calls of at most ``executor.max_batch_images``; on a
CUDA out-of-memory error a call is retried in halves down to single images before a request fails.
Every image has its own CPU ``torch.Generator`` seeded from ``request.seeds()``, so an image depends
on its seed alone, not on its batch-mates, the device or how the batch was split. Right after decode,
the safety checker (``generation.safety``, one per runner) judges the images of the requests that ask
for it, each image on its own.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from generation.compiled import BucketWarmer, CompiledModules, unet_batch
from generation.config import GenerationConfig
from generation.decode import decode_latents, truncation_warnings
from generation.devices import free_memory
from generation.errors import (
    FixableFailure,
    GenerationCancelled,
    GenerationFailed,
    ImagineError,
    InvalidRequest,
    ModelLoadError,
    OutOfMemory,
)
from generation.imagefiles import ALLOWED_FORMATS, open_image, unreadable_reason
from generation.interface import CancelToken, Outcome, ProgressCallback
from generation.loras import use_loras
from generation.models import LoadedModel, ModelCache
from generation.preview import linear_preview, tiny_decoder_preview
from generation.request import (
    MAX_INIT_IMAGE_SIDE,
    GenerationRequest,
    GenerationResult,
    ProgressEvent,
    Timings,
    active_loras,
    compatibility_key,
    denoising_steps,
    validate,
)
from generation.safety import SafetyCheckers
from generation.samplers import sampler_of
from generation.warmup import MEASURE_STEPS, WARMUP_STEPS, DownloadCallback, Warmed, measured

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineCall:
    """One imminent pipeline call, as seen by a fault hook: which batch member each image belongs to."""

    model: str
    mode: str
    width: int
    height: int
    steps: int
    members: tuple[int, ...]
    seeds: tuple[int, ...]


FaultHook = Callable[[PipelineCall], None]
"""Called right before each pipeline call; raising there acts like the pipeline raising (tests inject OOM)."""


@dataclass
class _Member:
    request: GenerationRequest
    token: CancelToken | None
    init_image: Image.Image | None = None
    images: dict[int, Image.Image] = field(default_factory=dict)
    nsfw: dict[int, bool] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: ImagineError | None = None
    denoise_s: float = 0.0
    decode_s: float = 0.0

    @property
    def live(self) -> bool:
        return self.error is None and not (self.token is not None and self.token.cancelled)


class Runner:
    """Owns the loaded models; one thread at a time calls ``run``."""

    def __init__(self, config: GenerationConfig, *, fault_hook: FaultHook | None = None) -> None:
        self._config = config
        self._models = ModelCache(config.executor, cache_dir=config.cache_dir)
        self._checkers = SafetyCheckers(config.executor, cache_dir=config.cache_dir)
        self._fault_hook = fault_hook
        self._warmer = BucketWarmer()  # executor.compile: compiles buckets in the background, one model at a time
        if config.executor.threads:
            torch.set_num_threads(config.executor.threads)

    @property
    def config(self) -> GenerationConfig:
        return self._config

    @property
    def max_batch_images(self) -> int:
        return self._config.executor.max_batch_images

    def use_models(self, config: GenerationConfig) -> None:
        """Take the models of a reloaded config; executor settings (device, dtype) keep their start-up values.

        One attribute swap, so the worker thread sees either the old or the new set, never a mix; a
        model whose entry changed is reloaded on its next use (the cache compares configs).
        """
        self._config = config.model_copy(update={"executor": self._config.executor})
        self._models.cache_dir = config.cache_dir
        self._checkers.cache_dir = config.cache_dir

    @property
    def safety_checkers(self) -> SafetyCheckers:
        """The checkers that judge images after decode (the worker thread's, like the models)."""
        return self._checkers

    @property
    def fault_hook(self) -> FaultHook | None:
        return self._fault_hook

    def compiled_for(self, loaded: LoadedModel) -> CompiledModules | None:
        """The compiled modules a batch of ``loaded`` may use: none while any model's buckets are being compiled
        (torch's stance then allows compiling, and only the warmer's thread may)."""
        return loaded.compiled if loaded.compiled is not None and self._warmer.idle else None

    def wait_compiled(self, timeout_s: float | None = None) -> bool:
        """Block until no model's buckets are being compiled (True), or ``timeout_s`` passed (benchmarks, tests)."""
        return self._warmer.wait(timeout_s)

    def model(self, name: str | None, on_download: DownloadCallback | None = None) -> LoadedModel:
        """The loaded model for a name or source (loading it if needed; ``on_download`` hears the download)."""
        model_name, model_config = self._config.model(name)
        return self._models.get(model_name, model_config, on_download)[0]

    def prepare(self, name: str | None, on_download: DownloadCallback | None = None, *,
                interrupt: CancelToken | None = None) -> Warmed:
        """Load a model (``on_download`` hears the download's progress) and measure it with a warm-up run.

        Raises ModelLoadError when it cannot be loaded, GenerationFailed when the warm-up fails, and
        GenerationCancelled when ``interrupt`` is set (``on_download`` may raise it too, to stop a download)."""
        model_name, model_config = self._config.model(name)
        loaded, _ = self._models.get(model_name, model_config, on_download)
        try:
            # Ready before the first request that asks for a check: a hub checker downloads here, with progress.
            self._checkers.for_model(model_config, on_download)
        except ModelLoadError as exc:  # the model still serves; requests that need the check fail until it loads
            _log.error("%s; requests that need a safety check fail until it loads", exc)
        timed: GenerationRequest | None = None
        timings = Timings()
        compiled = loaded.compiled if loaded.compiled is not None and loaded.compiled.state == "cold" else None
        # The eager warm-up's own calls are what the buckets compile from (generation.compiled).
        with compiled.capture() if compiled is not None else contextlib.nullcontext():
            for steps in (WARMUP_STEPS, MEASURE_STEPS):
                request = validate(GenerationRequest("warm-up", steps=min(steps, model_config.max_steps), seed=0),
                                   model_name, model_config)
                outcome = self.run([request], interrupt=interrupt)[0]
                if isinstance(outcome, GenerationCancelled):
                    raise outcome
                if isinstance(outcome, ImagineError):
                    raise GenerationFailed(f"model {model_name}: the warm-up generation failed: {outcome}")
                timed, timings = request, outcome.timings
        assert timed is not None
        if compiled is not None:
            self._warmer.start(compiled)  # in the background: the eager modules serve meanwhile
        return measured(model_name, str(loaded.placement.device), loaded.load_s, timed, timings,
                        default_steps=model_config.default_steps, cost_weight=model_config.cost_weight)

    def loaded_models(self) -> list[str]:
        """Names of the models held in memory, least recently used first."""
        return self._models.loaded_names()

    def close(self) -> None:
        """Unload every model and checker (the executor calls this on its worker thread)."""
        self._warmer.stop()
        self._models.clear()
        self._checkers.clear()

    def run(
        self,
        batch: Sequence[GenerationRequest],
        on_progress: ProgressCallback | None = None,
        *,
        cancel_tokens: Sequence[CancelToken | None] | None = None,
        interrupt: CancelToken | None = None,
    ) -> list[Outcome]:
        """One outcome per request, in order. ``interrupt`` stops the whole batch at the next step."""
        if not batch:
            return []
        keys = {compatibility_key(request) for request in batch}
        if len(keys) != 1 or any(request.seed is None for request in batch):
            raise ValueError("run() takes validated requests with one compatibility key")
        tokens = list(cancel_tokens) if cancel_tokens is not None else [None] * len(batch)
        if len(tokens) != len(batch):
            raise ValueError("cancel_tokens must have one entry per request")
        members = [_Member(request, token) for request, token in zip(batch, tokens, strict=True)]
        try:
            model_name, model_config = self._config.model(batch[0].model)
            loaded, fresh = self._models.get(model_name, model_config)
        except ImagineError as exc:
            return [exc for _ in batch]
        load_s = loaded.load_s if fresh else 0.0
        config = self._config  # one config for the whole batch, though a reload may swap it meanwhile
        for member in members:
            self._prepare(loaded, member, config)
        self._use_loras(loaded, members, config)
        _Call(self, loaded, members, on_progress, interrupt).run_all()
        base = loaded.base_scheduler  # what "default" runs (make_scheduler copies its class and config)
        model_sampler = sampler_of(type(base).__name__, base.config)
        return [self._outcome(member, load_s, model_sampler) for member in members]

    @staticmethod
    def _use_loras(loaded: LoadedModel, members: list[_Member], config: GenerationConfig) -> None:
        """Switch the model's adapters to the batch's LoRAs (one set: it is in the compatibility key).
        A LoRA that does not load fails the requests that use it, which are this whole batch."""
        live = [member for member in members if member.live]
        if not live:
            return
        try:
            use_loras(loaded, active_loras(live[0].request), config.loras)
        except ImagineError as exc:
            for member in live:
                member.error = exc

    def _prepare(self, loaded: LoadedModel, member: _Member, config: GenerationConfig) -> None:
        request = member.request
        try:
            # Limits (and LoRAs) may have changed in a reload (say, after running out of memory) while this waited.
            validate(request, loaded.name, loaded.config, loras=config)
        except InvalidRequest as exc:
            member.error = exc
            return
        member.warnings = truncation_warnings(loaded.tokenizer, request.prompt, request.negative_prompt)
        if request.init_image is None:
            return
        try:
            with open_image(request.init_image) as image:  # PNG, JPEG or WebP: no other decoder runs
                if max(image.size) > MAX_INIT_IMAGE_SIDE:  # size is known before decoding: refuse bombs early
                    member.error = FixableFailure(
                        f"the input image is {image.width}x{image.height}; allowed: at most "
                        f"{MAX_INIT_IMAGE_SIDE} pixels on each side")
                    return
                image.draft("RGB", (request.width or 0, request.height or 0))  # JPEG: decode at reduced size
                rgb = image.convert("RGB")
        except UnidentifiedImageError:
            member.error = FixableFailure(
                f"the input image {unreadable_reason(request.init_image)}; allowed: {ALLOWED_FORMATS}")
            return
        except Exception as exc:  # PIL raises many types for hostile files; only this member fails
            member.error = FixableFailure(
                f"the input image could not be read ({type(exc).__name__}); allowed: {ALLOWED_FORMATS}")
            return
        assert request.width is not None and request.height is not None
        member.init_image = rgb.resize((request.width, request.height), Image.Resampling.LANCZOS)

    def _outcome(self, member: _Member, load_s: float, model_sampler: str) -> Outcome:
        if member.error is not None:
            return member.error
        count = member.request.count
        if not member.live or len(member.images) < count:
            return GenerationCancelled("the request was cancelled before its images were finished")
        return GenerationResult(
            request=member.request,
            images=[member.images[index] for index in range(count)],
            seeds=member.request.seeds(),
            timings=Timings(load_s=load_s, denoise_s=member.denoise_s, decode_s=member.decode_s),
            nsfw=[member.nsfw[index] for index in range(count)] if member.nsfw else [],
            warnings=member.warnings,
            model_sampler=model_sampler,
        )


_Item = tuple[int, int]  # (member index, image index within the request)


def shown_step(done: int, run: int, asked: int) -> int:
    """Step ``done`` of the ``run`` the pipeline makes, counted as the member counts: 1 to the ``asked`` steps.

    The pipeline's count can differ from what was asked: PNDM adds a warm-up step (26 for 25), second-order
    schedulers count each step twice. Scaling keeps "step 4/4" for "the last of the 4 steps asked for"."""
    return max(1, min(asked, done * asked // max(run, 1)))


class _Call:
    """The pipeline calls of one ``Runner.run``: chunking, OOM split-and-retry, progress, cancel."""

    def __init__(self, runner: Runner, loaded: LoadedModel, members: list[_Member],
                 on_progress: ProgressCallback | None, interrupt: CancelToken | None) -> None:
        self._runner, self._loaded, self._members = runner, loaded, members
        self._on_progress, self._interrupt = on_progress, interrupt
        first = members[0].request
        assert first.width is not None and first.height is not None and first.steps is not None
        self._request, self._width, self._height, self._steps = first, first.width, first.height, first.steps
        self._executor = runner.config.executor
        self._fault_hook = runner.fault_hook
        self._sdxl = loaded.config.family == "sdxl"
        self._compiled = runner.compiled_for(loaded)  # chosen once per batch: warming never starts mid-batch

    def run_all(self) -> None:
        items = [(index, image) for index, member in enumerate(self._members) if member.live
                 for image in range(member.request.count)]
        size = self._executor.max_batch_images
        groups = [items]
        if self._sdxl:
            # SDXL zeroes the negative embedding only when no negative prompt is passed at all, so
            # images with and without one go in separate calls (as they would run alone).
            groups = [[item for item in items if not self._members[item[0]].request.negative_prompt],
                      [item for item in items if self._members[item[0]].request.negative_prompt]]
        for group in groups:
            for start in range(0, len(group), size):
                self._run_chunk(group[start:start + size])

    def _interrupted(self) -> bool:
        return self._interrupt is not None and self._interrupt.cancelled

    def _run_chunk(self, items: list[_Item]) -> None:
        items = [item for item in items if self._members[item[0]].live]
        if not items or self._interrupted():
            return
        try:
            self._denoise_and_decode(items)
            return
        except torch.OutOfMemoryError:
            pass
        except Exception as exc:
            # Only the requests in this call fail; the worker keeps serving.
            _log.exception("pipeline call failed for %d image(s)", len(items))
            for index in {index for index, _ in items}:
                self._members[index].error = GenerationFailed(f"generation failed: {type(exc).__name__}: {exc}")
            return
        # Out of the except block: the traceback's frames (and the activations they hold) are gone now.
        free_memory(self._loaded.placement)
        if len(items) > 1:
            half = len(items) // 2
            _log.warning("out of memory with %d images at %dx%d; retrying in halves",
                         len(items), self._width, self._height)
            self._run_chunk(items[:half])
            self._run_chunk(items[half:])
            return
        member = self._members[items[0][0]]
        member.error = OutOfMemory(
            f"the GPU ran out of memory at {self._width}x{self._height}, even one image at a time; "
            "try a smaller size"
        )

    def _denoise_and_decode(self, items: list[_Item]) -> None:
        members = [self._members[index] for index, _ in items]
        seeds = [member.request.seeds()[image] for member, (_, image) in zip(members, items, strict=True)]
        request = self._request
        if self._fault_hook is not None:
            self._fault_hook(PipelineCall(
                model=self._loaded.name, mode=request.mode, width=self._width, height=self._height, steps=self._steps,
                members=tuple(index for index, _ in items), seeds=tuple(seeds)))
        pipe = self._loaded.pipeline(request.mode)
        pipe.scheduler = self._loaded.scheduler(request.scheduler or "default")
        kwargs: dict[str, Any] = {
            "prompt": [m.request.prompt for m in members],
            "negative_prompt": (None if self._sdxl and not any(m.request.negative_prompt for m in members)
                                else [m.request.negative_prompt for m in members]),
            "num_inference_steps": self._steps,
            "guidance_scale": request.guidance,
            "generator": [torch.Generator("cpu").manual_seed(seed) for seed in seeds],
            "output_type": "latent",
            "callback_on_step_end": self._step_callback(items),
        }
        if request.mode == "img2img":
            kwargs.update(image=[m.init_image for m in members], strength=request.strength)
        else:
            kwargs.update(width=self._width, height=self._height)
        started = time.perf_counter()
        with self._unet(pipe, len(items)):
            latents = pipe(**kwargs).images
        denoised = time.perf_counter()
        if self._interrupted() or pipe.interrupt:
            return
        keep = [row for row, member in enumerate(members) if member.live]
        self._add_time(items, "denoise_s", denoised - started)
        if not keep:
            return
        decoded = decode_latents(self._loaded, latents[keep], self._width, self._height,
                                 self._executor.vae_tiling_above_pixels, self._compiled)
        self._add_time(items, "decode_s", time.perf_counter() - denoised)
        made: list[tuple[_Member, int]] = []
        for position, row in enumerate(keep):
            member, image_index = members[row], items[row][1]
            if not decoded.finite[position]:
                member.error = FixableFailure(
                    f"the image with seed {seeds[row]} came out as NaN/inf (numeric overflow); "
                    "try another seed, or float32/bfloat16 for this model")
                continue
            member.images[image_index] = decoded.images[position]
            made.append((member, image_index))
        checked = time.perf_counter()
        self._check_safety(made)
        self._add_time(items, "decode_s", time.perf_counter() - checked)

    @contextlib.contextmanager
    def _unet(self, pipe: Any, images: int) -> Iterator[None]:
        """The UNet for this call: the compiled one where its shape was warmed, else the eager one (never a
        recompile); the pipeline holds the eager one again afterwards."""
        compiled = self._compiled
        if compiled is None:
            yield
            return
        assert self._request.guidance is not None
        rows = unet_batch(images, self._request.guidance, compiled.unet.config.time_cond_proj_dim)
        chosen = compiled.unet_for(self._width, self._height, rows)
        if chosen is compiled.unet:
            yield
            return
        pipe.unet = chosen
        try:
            yield
        finally:
            pipe.unet = compiled.unet

    def _check_safety(self, made: list[tuple[_Member, int]]) -> None:
        """Flag the images of the members that ask for a check (or of a model that always wants one), each image
        judged alone; a checker that cannot load fails those members only."""
        wanted = [(member, index) for member, index in made
                  if member.request.check_safety or self._loaded.config.safety_checker]
        if not wanted:
            return
        try:
            checker = self._runner.safety_checkers.for_model(self._loaded.config)
        except ImagineError as exc:
            for member, _ in wanted:
                member.error = exc
            return
        flags = checker.flags([member.images[index] for member, index in wanted])
        for (member, index), flag in zip(wanted, flags, strict=True):
            member.nsfw[index] = flag

    def _add_time(self, items: list[_Item], attribute: str, seconds: float) -> None:
        for index in {index for index, _ in items}:
            member = self._members[index]
            setattr(member, attribute, getattr(member, attribute) + seconds)

    def _step_callback(self, items: list[_Item]) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
        every = self._executor.preview_every_steps
        rows_of_first_image = {index: row for row, (index, image) in reversed(list(enumerate(items)))}

        asked = denoising_steps(self._request)  # one compatibility key: the same for every member
        last_shown = 0

        def callback(pipe: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            nonlocal last_shown
            if self._interrupted() or not any(self._members[index].live for index, _ in items):
                # diffusers skips the remaining steps once ``interrupt`` is true.
                pipe._interrupt = True
                return {}
            shown = shown_step(step + 1, int(pipe.num_timesteps), asked)
            if self._on_progress is None or shown == last_shown:
                return {}
            last_shown = shown
            try:
                previews: tuple[Image.Image | None, ...] = ()
                if every and shown % every == 0 and shown < asked:
                    previews = self._previews(tensors["latents"], rows_of_first_image)
                event = ProgressEvent(step=shown, total=asked,
                                      preview=previews[0] if len(previews) == 1 else None, previews=previews)
                self._on_progress(event)
            except Exception:
                _log.exception("progress callback failed; generation continues")
            return {}

        return callback

    def _previews(self, latents: Any, rows: dict[int, int]) -> tuple[Image.Image | None, ...]:
        previews: list[Image.Image | None] = [None] * len(self._members)
        for index, row in rows.items():
            if not self._members[index].live:
                continue
            decoder = self._loaded.preview_decoder
            if decoder is not None:
                previews[index] = tiny_decoder_preview(decoder, latents[row])
            else:
                previews[index] = linear_preview(latents[row], self._loaded.config.family)
        return tuple(previews)
