"""The safety checker: diffusers' ``StableDiffusionSafetyChecker`` with its feature extractor (``CLIPImageProcessor``).

One per executor, whatever the model (it judges decoded pixels, not latents), loaded on first need on the
worker thread and kept; the runner calls ``SafetyChecker.flags`` right after decode, only for requests that
ask for a check (``GenerationRequest.check_safety``, set by the bot from the server's safety mode) or models
with ``safety_checker: true``. It only says which images it flags: the images are returned as made (diffusers'
own pipelines black flagged images out; here the bot decides per server what members see, and keeps the
original).

Sources (``executor.safety_checker``): a hub repo id (default ``CompVis/stable-diffusion-safety-checker``),
fetched by ``generation.hub`` like models' weights, into the same cache, offline from it when cached; a local
folder holding both parts (``save_pretrained``), or a pipeline folder with ``safety_checker/`` and
``feature_extractor/``; or a builtin with random weights (``builtin:tiny`` flags nothing,
``builtin:tiny-flag-all`` flags everything). A builtin model's images are noise by design, so they are judged
by ``builtin:tiny`` unless the setting names a builtin itself: smoke runs and tests never download 1.2 GB.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from generation.builtin import build_tiny_safety_checker
from generation.config import BUILTIN_SAFETY_CHECKERS, ExecutorConfig, ModelConfig
from generation.devices import Placement, choose_placement
from generation.errors import ImagineError, ModelLoadError
from generation.hub import ProgressCallback, fetch_model

_log = logging.getLogger(__name__)

FOR_BUILTIN_MODELS = "builtin:tiny"


def checker_source(configured: str, model_source: str) -> str:
    """The checker that judges a model's images: the configured one, except for builtin models (noise by design),
    which ``builtin:tiny`` judges unless the configured source is a builtin itself."""
    if configured.startswith("builtin:") or not model_source.startswith("builtin:"):
        return configured
    return FOR_BUILTIN_MODELS


@dataclass
class SafetyChecker:
    """A loaded checker on its device; ``flags`` runs it (on the worker thread)."""

    source: str
    model: Any  # StableDiffusionSafetyChecker
    processor: Any  # CLIPImageProcessor
    placement: Placement

    def flags(self, images: Sequence[Image.Image]) -> list[bool]:
        """One verdict per image: True where the checker finds a concept it was trained to flag."""
        if not images:
            return []
        inputs = self.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        clip_input = inputs.pixel_values.to(device=self.placement.device, dtype=self.placement.dtype)
        # forward() blacks out what it flags, in place: it gets stand-ins, never the images members may see.
        stand_ins = [np.zeros((1, 1, 3)) for _ in images]
        with torch.inference_mode():
            _, flagged = self.model(clip_input=clip_input, images=stand_ins)
        return [bool(flag) for flag in flagged]


def load_safety_checker(source: str, executor: ExecutorConfig, *, cache_dir: str | None = None,
                        on_progress: ProgressCallback | None = None) -> SafetyChecker:
    """Load the checker from ``source`` onto the executor's device; any failure is one ModelLoadError line."""
    placement = choose_placement(executor, ModelConfig(source=source))
    try:
        if source in BUILTIN_SAFETY_CHECKERS:
            model, processor = build_tiny_safety_checker(flag_all=source.endswith("flag-all"))
        else:
            model, processor = _from_folder(_folder_of(source, cache_dir, on_progress))
        model.to(device=placement.device, dtype=placement.dtype)
    except ImagineError as exc:
        if isinstance(exc, ModelLoadError):
            raise ModelLoadError(f"the safety checker {source!r} could not be loaded: {exc}") from exc
        raise  # a cancelled download (shutdown) stays what it is
    except Exception as exc:  # transformers raises many types; all mean "this source did not load"
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        raise ModelLoadError(f"the safety checker {source!r} could not be loaded: {reason}") from exc
    model.eval()
    _log.info("loaded the safety checker %s on %s/%s", source, placement.device, placement.dtype)
    return SafetyChecker(source, model, processor, placement)


def _folder_of(source: str, cache_dir: str | None, on_progress: ProgressCallback | None) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ModelLoadError(f"{source!r} is neither an existing folder nor a hub repo id (owner/name)")
    token = os.environ.get("HF_TOKEN") or None
    return fetch_model(source, revision=None, token=token, cache_dir=cache_dir, on_progress=on_progress)


def _from_folder(folder: Path) -> tuple[Any, Any]:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    # A whole pipeline folder keeps the two parts in subfolders; the checker's own repo has them side by side.
    model_folder = folder / "safety_checker" if (folder / "safety_checker").is_dir() else folder
    processor_folder = folder / "feature_extractor" if (folder / "feature_extractor").is_dir() else folder
    model = StableDiffusionSafetyChecker.from_pretrained(str(model_folder))
    processor = CLIPImageProcessor.from_pretrained(str(processor_folder))
    return model, processor


class SafetyCheckers:
    """The executor's checkers by source (at most two: the configured one, and ``builtin:tiny`` for builtin
    models), each loaded once. Not thread-safe by design: only the worker thread uses it."""

    def __init__(self, executor: ExecutorConfig, *, cache_dir: str | None = None) -> None:
        self._executor = executor
        self.cache_dir = cache_dir
        self._loaded: dict[str, SafetyChecker] = {}

    def for_model(self, model: ModelConfig, on_progress: ProgressCallback | None = None) -> SafetyChecker:
        """The checker for ``model``'s images, loading it if need be (a failed load is tried again next time)."""
        source = checker_source(self._executor.safety_checker, model.source)
        checker = self._loaded.get(source)
        if checker is None:
            checker = load_safety_checker(source, self._executor, cache_dir=self.cache_dir, on_progress=on_progress)
            self._loaded[source] = checker
        return checker

    def clear(self) -> None:
        self._loaded.clear()
