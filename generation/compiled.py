"""Compiled UNet and VAE decoder in fixed shape buckets, beside the eager modules they wrap.

With ``executor.compile`` every loaded model keeps its eager UNet and VAE decoder and gets a ``torch.compile``d
twin of each (``dynamic=False``: one graph per shape, the fastest, CUDA graphs with ``reduce-overhead``). The
shapes compiled are the buckets: sizes (``compile_buckets``, default the model's default size) x images per call
(``compile_batch_sizes``, within the batch limits).

- **Nobody waits for a compile.** ``BucketWarmer`` compiles the buckets one by one on a thread of its own,
  started by ``Runner.prepare`` (the start-up warm-up), while the eager modules serve every batch on the worker
  thread. Compiled modules are used only once every bucket of the session is warm.
- **Never a recompile while serving.** The runner chooses per call (``CompiledModules.unet_for``,
  ``decoder_for``): a shape that was warmed runs compiled, any other runs on the eager module. Once warm,
  torch's stance is ``eager_on_recompile``: should a call reach a compiled module with something its guards did
  not see (another scheduler's timestep dtype, say), it runs eager rather than compile on a user's time.
- **Warming needs no pipeline internals.** The eager warm-up run in ``Runner.prepare`` records one real call of
  each module (``capture``); each bucket repeats it with the batch and latent size scaled, so the compiled
  graphs see exactly the dtypes, keyword arguments and grad mode the pipeline uses.
- **A failure falls back to eager** with one warning line, whether ``torch.compile`` itself or a bucket's
  compile fails.
- ``compile_cache_dir`` is torch's on-disk cache (inductor's FX graph cache): a restart loads the graphs
  instead of compiling them again.

Not with LoRAs (the config refuses both): peft's layers change the graph the compiled modules were made from.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from generation.config import ExecutorConfig, ModelConfig

_log = logging.getLogger(__name__)

Bucket = tuple[int, int, int]  # (width, height, images per call)
LATENT_SCALE = 8  # SD's VAE: one latent pixel per 8x8 image pixels


def plan_buckets(executor: ExecutorConfig, model: ModelConfig) -> list[Bucket]:
    """The buckets to compile for ``model``, most used first: each size (those the model allows) at each batch size
    up to the batch limits (``executor.max_batch_images`` and the model's own)."""
    sizes = executor.bucket_sizes or [(model.default_width, model.default_height)]
    cap = min(executor.max_batch_images, model.max_batch_images or executor.max_batch_images)
    batches = sorted({size for size in executor.compile_batch_sizes if size <= cap})
    allowed = [(width, height) for width, height in dict.fromkeys(sizes)
               if width % model.size_multiple == 0 and height % model.size_multiple == 0
               and width <= model.max_width and height <= model.max_height and width * height <= model.max_pixels]
    return [(width, height, images) for width, height in allowed for images in batches]


def unet_batch(images: int, guidance: float, time_cond_proj_dim: int | None) -> int:
    """Rows the UNet sees for ``images``: twice as many with classifier-free guidance, which diffusers' SD pipelines
    use when guidance > 1 and the UNet is not guidance-distilled (no ``time_cond_proj_dim``)."""
    return images * 2 if guidance > 1 and time_cond_proj_dim is None else images


@dataclass
class _Example:
    """One recorded call of a module: its arguments and the grad modes it ran under."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    grad: bool
    inference: bool

    @classmethod
    def of(cls, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Example:
        return cls(args, kwargs, torch.is_grad_enabled(), torch.is_inference_mode_enabled())

    def scaled(self, rows: int, latent_height: int, latent_width: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The same call for ``rows`` rows of latents of that size: every tensor batched like the first
        argument is repeated to ``rows``; the latents (the first argument) are fresh noise of the new size."""
        sample = self.args[0]
        recorded_rows = sample.shape[0]

        def scale(value: Any) -> Any:
            if isinstance(value, dict):
                return {key: scale(item) for key, item in value.items()}
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == recorded_rows:
                repeats = -(-rows // recorded_rows)
                return value.repeat(repeats, *([1] * (value.dim() - 1)))[:rows].contiguous()
            return value

        latents = torch.randn((rows, sample.shape[1], latent_height, latent_width), dtype=sample.dtype,
                              device=sample.device)
        return (latents, *(scale(value) for value in self.args[1:])), scale(self.kwargs)

    @contextlib.contextmanager
    def modes(self) -> Iterator[None]:
        with torch.inference_mode(self.inference), torch.set_grad_enabled(self.grad):
            yield


@dataclass
class CompiledModules:
    """One model's eager UNet and VAE decoder, their compiled twins, and the buckets warmed so far.

    ``compiled_decoder`` is None where the decoder is not compiled: an SDXL VAE that decodes in float32 (its
    dtype changes around every decode, which would change the graph under a compile in progress)."""

    model: str
    unet: Any
    decoder: Any
    compiled_unet: Any
    compiled_decoder: Any | None
    buckets: list[Bucket]
    state: str = "cold"  # cold → queued → warming → ready | failed | stopped
    warm_s: float | None = None  # seconds the warming took (with a filled disk cache: the warm start)
    _unet_ready: set[tuple[int, int, int]] = field(default_factory=set)  # (latent h, latent w, rows)
    _decoder_ready: set[tuple[int, int, int]] = field(default_factory=set)
    _examples: dict[str, _Example] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def unet_for(self, width: int, height: int, rows: int) -> Any:
        """The compiled UNet when this shape was warmed (and warming is over), else the eager one."""
        key = (height // LATENT_SCALE, width // LATENT_SCALE, rows)
        return self.compiled_unet if self.ready and key in self._unet_ready else self.unet

    def decoder_for(self, width: int, height: int, rows: int) -> Any:
        key = (height // LATENT_SCALE, width // LATENT_SCALE, rows)
        return self.compiled_decoder if self.ready and key in self._decoder_ready else self.decoder

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Record the first call of the eager UNet and decoder made inside the block (the warm-up run)."""
        def recorder(name: str) -> Callable[..., None]:
            def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                self._examples.setdefault(name, _Example.of(args, dict(kwargs)))
            return hook

        handles = [self.unet.register_forward_pre_hook(recorder("unet"), with_kwargs=True),
                   self.decoder.register_forward_pre_hook(recorder("decoder"), with_kwargs=True)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @property
    def captured(self) -> bool:
        return {"unet", "decoder"} <= self._examples.keys()

    def warm(self) -> bool:
        """Compile every bucket (blocking: ``BucketWarmer`` runs it on its thread); True when all are warm. A failure
        is logged in one warning line and leaves the model eager. Needs a ``capture``d call first."""
        if not self.captured:
            return self._fail("no warm-up call was recorded to compile from")
        self.state = "warming"
        started = time.perf_counter()
        unet, decoder = self._examples["unet"], self._examples["decoder"]
        per_image = unet.args[0].shape[0] // max(1, decoder.args[0].shape[0])  # 2 with guidance, else 1
        try:
            for width, height, images in self.buckets:
                if self._stop.is_set():
                    self.state = "stopped"
                    self._done.set()
                    return False
                latent_h, latent_w = height // LATENT_SCALE, width // LATENT_SCALE
                rows = images * per_image
                args, kwargs = unet.scaled(rows, latent_h, latent_w)
                with unet.modes():
                    self.compiled_unet(*args, **kwargs)
                self._unet_ready.add((latent_h, latent_w, rows))
                if self.compiled_decoder is not None:
                    args, kwargs = decoder.scaled(images, latent_h, latent_w)
                    with decoder.modes():
                        self.compiled_decoder(*args, **kwargs)
                    self._decoder_ready.add((latent_h, latent_w, images))
                _log.debug("model %s: bucket %dx%d x%d compiled", self.model, width, height, images)
        except Exception as exc:  # inductor, triton and CUDA raise many types; all mean "serve eager"
            _log.debug("compile failure of model %s", self.model, exc_info=exc)
            return self._fail(f"{type(exc).__name__}: {_first_line(exc)}")
        self.warm_s = time.perf_counter() - started
        self.state = "ready"
        self._done.set()
        _log.info("model %s: %d shape bucket(s) compiled in %.1fs; other shapes run eager",
                  self.model, len(self.buckets), self.warm_s)
        return True

    def retire(self) -> None:
        """Stop warming after the bucket under way (the model was unloaded, or the executor closes)."""
        self._stop.set()
        if self.state in ("cold", "queued"):
            self.state = "stopped"
            self._done.set()

    def _fail(self, why: str) -> bool:
        self.state = "failed"
        self._unet_ready.clear()
        self._decoder_ready.clear()
        self._done.set()
        _log.warning("model %s: compiling failed, serving eager: %s", self.model, why)
        return False

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until warming ended (ready, failed or stopped); True when ready. For benchmarks and tests."""
        self._done.wait(timeout_s)
        return self.ready


def wrap(name: str, pipe: Any, executor: ExecutorConfig, model: ModelConfig) -> CompiledModules | None:
    """Compiled twins of ``pipe``'s UNet and VAE decoder (nothing is compiled yet: that is ``warm``), or None with
    one warning line when ``torch.compile`` refuses them."""
    buckets = plan_buckets(executor, model)
    if not buckets:
        _log.warning("model %s: no compile bucket fits it (executor.compile_buckets); serving eager", name)
        return None
    use_cache_dir(executor.compile_cache_dir)
    # One code object (the UNet's forward) holds a graph per bucket: let it hold them all.
    dynamo = torch._dynamo.config
    dynamo.recompile_limit = max(int(getattr(dynamo, "recompile_limit", 8)), 2 * len(buckets) + 8)
    vae = pipe.vae
    upcasts = model.family == "sdxl" and vae.dtype == torch.float16 and bool(vae.config.force_upcast)
    if executor.compile_scope == "blocks":  # each block type's forward holds a graph per block shape and bucket
        dynamo.recompile_limit = max(int(dynamo.recompile_limit), 8 * len(buckets) + 16)
    try:
        compiled_unet = (compile_blocks(pipe.unet, executor.compile_mode) if executor.compile_scope == "blocks"
                         else torch.compile(pipe.unet, mode=executor.compile_mode, dynamic=False))
        compiled_decoder = None if upcasts else torch.compile(vae.decoder, mode=executor.compile_mode, dynamic=False)
    except Exception as exc:
        _log.warning("model %s: torch.compile failed, serving eager: %s: %s", name, type(exc).__name__,
                     _first_line(exc))
        return None
    return CompiledModules(name, pipe.unet, vae.decoder, compiled_unet, compiled_decoder, buckets)


def compile_blocks(module: torch.nn.Module, mode: str) -> torch.nn.Module:
    """A twin of ``module`` whose repeated blocks (diffusers' ``_repeated_blocks``: the UNet's transformer blocks)
    are compiled and everything else runs eager: regional compilation. The twin shares every parameter and buffer
    with ``module`` and leaves it untouched, so the eager module keeps serving the shapes that have no bucket
    (diffusers' own ``compile_repeated_blocks`` compiles in place, which would leave no eager UNet)."""
    names = set(getattr(module, "_repeated_blocks", None) or ())
    if not names:
        raise ValueError(f"{type(module).__name__} names no repeated blocks to compile")
    found = 0

    def twin(node: torch.nn.Module) -> torch.nn.Module:
        nonlocal found
        if type(node).__name__ in names:
            found += 1
            return torch.compile(node, mode=mode, dynamic=False)
        copied = copy.copy(node)  # a new module object over the same parameter and buffer tensors
        copied._modules = {name: None if child is None else twin(child) for name, child in node._modules.items()}
        return copied

    made = twin(module)
    if not found:
        raise ValueError(f"{type(module).__name__} has none of its repeated blocks {sorted(names)}")
    return made


def use_cache_dir(folder: str | None) -> None:
    """Point inductor's on-disk caches at ``folder`` (read when it first compiles), so a restart reuses them."""
    if not folder:
        return
    path = Path(folder).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    inductor = getattr(torch, "_inductor", None)
    if inductor is not None and hasattr(inductor.config, "fx_graph_cache"):
        inductor.config.fx_graph_cache = True


class BucketWarmer:
    """Warms models' buckets one model at a time, on one thread of its own (one warmer per runner).

    ``idle`` is False while anything is queued or compiling: the runner then uses no compiled module at all,
    since torch's stance is ``default`` meanwhile (a guard miss on the worker thread would compile there). When
    the queue drains the stance becomes ``eager_on_recompile``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[CompiledModules] = []
        self._current: CompiledModules | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until nothing is queued or compiling (True), or ``timeout_s`` passed. For benchmarks and tests."""
        return self._idle.wait(timeout_s)

    def start(self, compiled: CompiledModules) -> None:
        """Queue ``compiled`` for warming in the background (once: a model already queued or warm is left alone)."""
        if compiled.state != "cold":
            return
        with self._lock:
            compiled.state = "queued"
            self._pending.append(compiled)
            if self._thread is None:
                self._idle.clear()
                _set_stance("default")  # compiling needs it; nothing compiled serves until the queue drains
                self._thread = threading.Thread(target=self._run, name="imagine-compile", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._current = None
                    if not self._closed:
                        _set_stance("eager_on_recompile")
                    self._thread = None
                    self._idle.set()
                    return
                self._current = compiled = self._pending.pop(0)
            if compiled.state == "queued":
                compiled.warm()

    def stop(self) -> None:
        """Retire everything queued and the model being compiled (it stops after its current bucket; not waited
        for, since a compile can take minutes: the thread is a daemon and never holds the process open)."""
        with self._lock:
            self._closed = True
            for compiled in [*self._pending, *([self._current] if self._current else [])]:
                compiled.retire()
            self._pending.clear()
        _set_stance("default")


def _set_stance(stance: str) -> None:
    setter = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
    if setter is not None:
        setter(stance)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
