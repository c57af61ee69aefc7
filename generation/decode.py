"""Latents to PIL images (VAE decode, NaN check) and prompt-length warnings; the safety checker runs after this
(``generation.safety``).

The runner asks the pipeline for latents and decodes here itself, so decode time is measured
apart from denoising, cancelled members are never decoded, and an interrupted batch decodes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from generation.compiled import CompiledModules
from generation.models import LoadedModel


@dataclass
class Decoded:
    images: list[Image.Image]
    finite: list[bool]


def decode_latents(model: LoadedModel, latents: Any, width: int, height: int, tiling_above: int,
                   compiled: CompiledModules | None = None) -> Decoded:
    """Decode ``latents``; ``compiled``: the model's compiled modules, whose decoder runs this call when its shape
    was warmed (a tiled or upcast decode always runs eager: its shapes or dtypes are not the bucket's)."""
    pipe = model.pipe
    vae = pipe.vae
    finite = [bool(ok) for ok in torch.isfinite(latents).flatten(1).all(dim=1).tolist()]
    tiled = bool(tiling_above and width * height > tiling_above)
    if tiled:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    # SDXL's original VAE overflows in fp16; its pipelines decode in fp32 when the config asks for it.
    upcast = model.config.family == "sdxl" and vae.dtype == torch.float16 and bool(vae.config.force_upcast)
    config = vae.config
    decoder = None if compiled is None or tiled or upcast else compiled.decoder_for(width, height, latents.shape[0])
    with torch.inference_mode(), _decoder(vae, decoder):
        if upcast:
            vae.to(dtype=torch.float32)
        latents = latents.to(dtype=vae.dtype, device=_module_device(vae))
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, latents.shape[1], 1, 1)
            mean_t = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(shape)
            std_t = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(shape)
            latents = latents * std_t / config.scaling_factor + mean_t
        else:
            latents = latents / config.scaling_factor
        try:
            pixels = vae.decode(latents, return_dict=False)[0]
        finally:
            if upcast:
                vae.to(dtype=torch.float16)
        decoded_ok = torch.isfinite(pixels).flatten(1).all(dim=1).tolist()
        finite = [ok and bool(good) for ok, good in zip(finite, decoded_ok, strict=True)]
        images = pipe.image_processor.postprocess(pixels, output_type="pil")
    return Decoded(images=list(images), finite=finite)


@contextlib.contextmanager
def _decoder(vae: Any, decoder: Any | None) -> Iterator[None]:
    """``vae.decoder`` is ``decoder`` for the block (a compiled twin), then the eager one again."""
    eager = vae.decoder
    if decoder is None or decoder is eager:
        yield
        return
    vae.decoder = decoder
    try:
        yield
    finally:
        vae.decoder = eager


def _module_device(module: Any) -> Any:
    # With CPU offload the parameters sit on the CPU until a hook moves them; follow the hook's device.
    hook = getattr(module, "_hf_hook", None)
    execution = getattr(hook, "execution_device", None)
    return execution if execution is not None else next(module.parameters()).device


def truncation_warnings(tokenizer: Any, prompt: str, negative_prompt: str) -> list[str]:
    """What the text encoder will not see, measured with the model's own tokenizer."""
    limit = int(tokenizer.model_max_length)
    warnings = []
    for label, text in (("prompt", prompt), ("negative prompt", negative_prompt)):
        if not text:
            continue
        ids = tokenizer(text, truncation=False, add_special_tokens=True).input_ids
        if len(ids) > limit:
            # The last kept position holds the end token, so content tokens past limit-1 are dropped.
            dropped = tokenizer.decode(ids[limit - 1:-1], skip_special_tokens=True).strip()
            # Said to members: "tokens" is the one word of jargon, and the numbers show what it means.
            warnings.append(
                f"The {label} is too long for the model ({len(ids)} tokens; it reads only {limit}), so it ignored "
                f"\"{_clip(dropped)}\""
            )
    return warnings


def _clip(text: str, length: int = 80) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"
