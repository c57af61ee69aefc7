"""Cheap looks at half-denoised latents: a tiny autoencoder when configured, else a linear map to RGB."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

# Least-squares fits of SD-family latent channels to RGB (rows: latent channels; columns: R, G, B).
# Rough by nature: a preview only has to show composition and colour while the real decode is pending.
_SD_FACTORS = (
    (0.30, 0.19, 0.21),
    (0.19, 0.29, 0.17),
    (-0.16, 0.19, 0.26),
    (-0.18, -0.27, -0.47),
)
_SDXL_FACTORS = (
    (0.37, 0.42, 0.43),
    (-0.25, 0.00, 0.11),
    (0.11, 0.11, -0.04),
    (-0.32, -0.25, -0.22),
)
_SDXL_BIAS = (0.16, 0.19, 0.20)


def linear_preview(latents: Any, family: str) -> Image.Image | None:
    """RGB at latent resolution (1/8 of the image) for one latent ``[C, H, W]``; None if not 4 channels."""
    if latents.shape[0] != 4:
        return None
    factors = torch.tensor(_SDXL_FACTORS if family == "sdxl" else _SD_FACTORS, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->rhw", latents.detach().float().cpu(), factors)
    if family == "sdxl":
        rgb = rgb + torch.tensor(_SDXL_BIAS).view(3, 1, 1)
    return _to_image(rgb)


def tiny_decoder_preview(decoder: Any, latents: Any) -> Image.Image:
    """Full-resolution preview through a tiny autoencoder (TAESD-style) for one latent ``[C, H, W]``."""
    with torch.inference_mode():
        decoded = decoder.decode(latents.unsqueeze(0).to(decoder.dtype), return_dict=False)[0][0]
    return _to_image(decoded.float().cpu())


def _to_image(rgb: Any) -> Image.Image:
    # Both decoders produce roughly [-1, 1].
    array = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")
