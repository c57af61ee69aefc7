"""Loading models from their sources, and a small LRU of loaded ones.

Sources: ``builtin:tiny`` / ``builtin:sd15-random`` (built in code), a local diffusers folder, a
single ``.safetensors``/``.ckpt`` checkpoint, or a hub repo id (downloaded by ``generation.hub`` with
byte progress into ``models.cache_dir`` or huggingface_hub's cache; revision, variant and ``HF_TOKEN``
honoured). txt2img and img2img pipelines share one set of components.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers

from generation.builtin import BUILTIN_SOURCES, build_builtin
from generation.compiled import CompiledModules
from generation.compiled import wrap as wrap_compiled
from generation.config import ExecutorConfig, ModelConfig
from generation.devices import Placement, choose_placement, free_memory, optimise
from generation.errors import ModelLoadError
from generation.hub import ProgressCallback, explain_failure, fetch_pipeline, is_hub_failure
from generation.paths import SINGLE_FILE_SUFFIXES
from generation.schedulers import make_scheduler

_log = logging.getLogger(__name__)

_PIPELINES = {"sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}


@dataclass
class LoadedModel:
    """One model's components on its device, with the pipelines that share them."""

    name: str
    config: ModelConfig
    placement: Placement
    pipe: Any
    load_s: float
    base_scheduler: Any
    preview_decoder: Any | None = None
    compiled: CompiledModules | None = field(default=None, repr=False)  # executor.compile: the compiled twins
    _img2img: Any | None = field(default=None, repr=False)
    lora_state: Any = field(default=None, repr=False)  # generation.loras: the adapters loaded into this model

    @property
    def tokenizer(self) -> Any:
        return self.pipe.tokenizer

    def pipeline(self, mode: str) -> Any:
        """The txt2img pipeline, or an img2img one over the same component objects (no second copy)."""
        if mode == "txt2img":
            return self.pipe
        if self._img2img is None:
            self._img2img = diffusers.AutoPipelineForImage2Image.from_pipe(self.pipe)
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img

    def scheduler(self, name: str) -> Any:
        # From the scheduler the model was loaded with: calls replace pipe.scheduler with their own.
        return make_scheduler(name, self.base_scheduler)


def _source_kind(source: str) -> str:
    if source.startswith("builtin:"):
        return "builtin"
    path = Path(source).expanduser()
    if path.suffix in SINGLE_FILE_SUFFIXES:
        return "single_file"
    if path.is_dir():
        return "folder"
    if source.startswith((".", "/", "~")) or path.exists() or source.count("/") != 1:
        return "missing"
    return "hub"


def variant_for(model: ModelConfig, placement: Placement) -> str | None:
    """The weight files to fetch: ``auto`` means half precision where it runs in half precision (CUDA, MPS)."""
    if model.variant != "auto":
        return model.variant
    return "fp16" if str(placement.device).startswith(("cuda", "mps")) else None


def _pipeline_class(model: ModelConfig) -> Any:
    return getattr(diffusers, _PIPELINES[model.family])


def _from_source(
    name: str, model: ModelConfig, placement: Placement, on_progress: ProgressCallback | None = None,
    cache_dir: str | None = None,
) -> Any:
    source, kind = model.source, _source_kind(model.source)
    cls = _pipeline_class(model)
    if kind == "builtin":
        if source not in BUILTIN_SOURCES:
            allowed = ", ".join(BUILTIN_SOURCES)
            raise ModelLoadError(f"model {name}: unknown source {source!r}; allowed builtins: {allowed}")
        return build_builtin(source, device=placement.device, dtype=placement.dtype)
    if kind == "missing":
        raise ModelLoadError(
            f"model {name}: source {source!r} is neither an existing folder or file nor a hub id (owner/name)"
        )
    kwargs: dict[str, Any] = {"dtype": placement.dtype}
    if model.family != "sdxl":
        # The executor's own checker (generation.safety) judges every model's images; the pipeline's copy would
        # be a second 1.2 GB that blacks flagged images out before the bot can apply a server's policy.
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if model.vae:
        kwargs["vae"] = _load_vae(model.vae, placement)
    token = os.environ.get("HF_TOKEN") or None
    if kind == "single_file":
        return _from_single_file(name, model, cls, {**kwargs, "token": token, "cache_dir": cache_dir})
    variant = variant_for(model, placement)
    if variant:
        kwargs["variant"] = variant
    folder = os.path.expanduser(source)
    if kind == "hub":
        try:
            folder = str(fetch_pipeline(source, revision=model.revision, variant=variant, token=token,
                                        cache_dir=cache_dir, on_progress=on_progress, skip=_unused_components(model)))
        except ModelLoadError as exc:
            raise ModelLoadError(f"model {name}: {exc}") from exc
    try:
        return cls.from_pretrained(folder, **kwargs)
    except Exception as exc:  # diffusers raises many types; all mean "this source did not load"
        where = "local folder" if kind == "folder" else f"hub repo {source!r} downloaded to"
        raise ModelLoadError(f"model {name}: cannot load {where} {folder!r}: {_first_line(exc)}") from exc


def _unused_components(model: ModelConfig) -> tuple[str, ...]:
    # Not downloaded: the pipeline's safety checker (~1.2 GB; the executor loads one of its own, once, whatever the
    # model: generation.safety); a configured VAE replaces the repo's.
    return ("safety_checker", *(("vae",) if model.vae else ()))


def _from_single_file(name: str, model: ModelConfig, cls: Any, kwargs: dict[str, Any]) -> Any:
    path = Path(model.source).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"model {name}: checkpoint file {path} does not exist")
    try:
        return cls.from_single_file(str(path), **kwargs)
    except Exception as exc:
        if not is_hub_failure(exc):
            raise ModelLoadError(f"model {name}: cannot load checkpoint {path}: {_first_line(exc)}") from exc
        # diffusers fetches the family's config files (never weights) from the hub for a single file.
        repo = _single_file_config_repo(model)
        reason = explain_failure(exc, repo_id=repo, revision=None, cache_dir=kwargs.get("cache_dir"))
        raise ModelLoadError(
            f"model {name}: cannot load checkpoint {path}: it needs its family's config files from the model hub "
            f"once (they are cached afterwards): {reason}; offline, convert it to a diffusers folder and use that "
            f"folder as the source"
        ) from exc


def _single_file_config_repo(model: ModelConfig) -> str:
    """The hub repo whose config files diffusers reads for a plain checkpoint of this family (inpainting and
    other variants of a family use another: diffusers tells them apart by the checkpoint's keys)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS

    kind = {"sd1": "v1", "sd2": "v2", "sdxl": "xl_base"}[model.family]
    return str(DIFFUSERS_DEFAULT_PIPELINE_PATHS[kind]["pretrained_model_name_or_path"])


def _load_vae(source: str, placement: Placement) -> Any:
    try:
        if source.endswith(SINGLE_FILE_SUFFIXES):
            return diffusers.AutoencoderKL.from_single_file(source, dtype=placement.dtype)
        return diffusers.AutoencoderKL.from_pretrained(source, dtype=placement.dtype)
    except Exception as exc:
        raise ModelLoadError(f"cannot load VAE {source!r}: {_first_line(exc)}") from exc


RANDOM_PREVIEW_DECODER = "builtin:taesd-random"  # TAESD's architecture, random weights: its cost, for benchmarks


def _load_preview_decoder(source: str, placement: Placement) -> Any | None:
    try:
        if source == RANDOM_PREVIEW_DECODER:
            decoder = diffusers.AutoencoderTiny()  # float32, as built
            if decoder.dtype != placement.dtype:
                decoder = decoder.to(dtype=placement.dtype)
        else:
            decoder = diffusers.AutoencoderTiny.from_pretrained(source, dtype=placement.dtype)
    except Exception as exc:
        # Previews are a nicety: fall back to the linear approximation instead of failing the model.
        _log.warning("preview decoder %r not loaded (%s); using the linear preview", source, _first_line(exc))
        return None
    return decoder.to(placement.device)


def _fuse_lora(name: str, pipe: Any, source: str) -> None:
    """Merge a LoRA into the model's weights for good (LCM-LoRA, say): no per-step cost, and user LoRAs
    still apply on top."""
    path = Path(source).expanduser()
    try:
        if path.suffix == ".safetensors":
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="fused")
        else:
            pipe.load_lora_weights(source, adapter_name="fused", token=os.environ.get("HF_TOKEN"))
        pipe.fuse_lora(adapter_names=["fused"], lora_scale=1.0)
        pipe.unload_lora_weights()  # the merged weights stay; the adapter's own copy goes
    except Exception as exc:
        raise ModelLoadError(f"model {name}: cannot merge the LoRA {source!r} (models.{name}.fuse_lora): "
                             f"{_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__


def load_model(
    name: str, model: ModelConfig, executor: ExecutorConfig, on_progress: ProgressCallback | None = None, *,
    cache_dir: str | None = None,
) -> LoadedModel:
    """Load ``model`` onto the configured device; every failure is a ModelLoadError naming the model.

    ``on_progress`` hears the bytes of a hub download (nothing for other sources); ``cache_dir`` is where
    hub files are kept (default: huggingface_hub's, from ``HF_HOME``)."""
    placement = choose_placement(executor, model)
    started = time.perf_counter()
    pipe = _from_source(name, model, placement, on_progress, cache_dir)
    if model.fuse_lora:
        _fuse_lora(name, pipe, model.fuse_lora)
    optimise(pipe, executor, placement)
    compiled = None
    if executor.compile and executor.cpu_offload and placement.is_cuda:
        _log.warning("model %s: executor.compile does not combine with cpu_offload; serving eager", name)
    elif executor.compile:
        compiled = wrap_compiled(name, pipe, executor, model)  # warmed later, in the background (Runner.prepare)
    preview = _load_preview_decoder(model.preview_decoder, placement) if model.preview_decoder else None
    load_s = time.perf_counter() - started
    _log.info("loaded model %s from %s on %s/%s in %.2fs",
              name, model.source, placement.device, placement.dtype, load_s)
    return LoadedModel(name=name, config=model, placement=placement, pipe=pipe, load_s=load_s,
                       base_scheduler=pipe.scheduler, preview_decoder=preview, compiled=compiled)


_WEIGHT_FIELDS = ("source", "family", "revision", "variant", "dtype", "vae", "preview_decoder", "fuse_lora")


def _weights_key(model: ModelConfig) -> tuple[object, ...]:
    """What decides the loaded weights; other fields (limits, defaults, cost) change without a reload."""
    return tuple(getattr(model, name) for name in _WEIGHT_FIELDS)


class ModelCache:
    """The last ``executor.max_loaded_models`` models used, least recently used evicted first.

    Not thread-safe by design: only the executor's worker thread touches it.
    """

    def __init__(self, executor: ExecutorConfig, *, cache_dir: str | None = None) -> None:
        self._executor = executor
        self.cache_dir = cache_dir  # models.cache_dir: where hub downloads go
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()

    def get(
        self, name: str, model: ModelConfig, on_progress: ProgressCallback | None = None
    ) -> tuple[LoadedModel, bool]:
        """The loaded model and whether this call loaded it (``on_progress`` hears a hub download's bytes)."""
        loaded = self._models.get(name)
        if loaded is not None and _weights_key(loaded.config) == _weights_key(model):
            loaded.config = model  # a limit or default changed, not the weights: no reload
            self._models.move_to_end(name)
            return loaded, False
        self._evict(keep=self._executor.max_loaded_models - 1, also=name)
        loaded = load_model(name, model, self._executor, on_progress, cache_dir=self.cache_dir)
        self._models[name] = loaded
        return loaded, True

    def loaded_names(self) -> list[str]:
        return list(self._models)

    def clear(self) -> None:
        self._evict(keep=0)

    def _evict(self, *, keep: int, also: str | None = None) -> None:
        replaced = self._models.pop(also, None) if also else None
        if replaced is not None:
            _retire(replaced)
        evicted = replaced is not None
        while len(self._models) > keep:
            old_name, old = self._models.popitem(last=False)
            _retire(old)
            _log.info("unloading model %s (max_loaded_models=%d)", old_name, self._executor.max_loaded_models)
            evicted = True
        if evicted:
            free_memory()


def _retire(loaded: LoadedModel) -> None:
    if loaded.compiled is not None:
        loaded.compiled.retire()  # its buckets stop warming: the model is going
