"""Random-weight pipelines of the real diffusers/transformers classes, built in code with no download.

``builtin:tiny`` is a few-hundred-kilobyte Stable Diffusion for tests and smoke runs: its images are
noise by design, but every code path (text encoder, UNet, VAE, schedulers, img2img) is the real one.
``builtin:tiny-xl`` is the same idea for the SDXL family (two text encoders, micro-conditioning).
``builtin:sd15-random`` has Stable Diffusion 1.5's full-size architecture (random weights) so GPU
speed and memory can be measured without the weights; ``builtin:sdxl-random`` is SDXL's (family sdxl).
``build_tiny_safety_checker`` is the safety checker's counterpart (``executor.safety_checker:
builtin:tiny`` or ``builtin:tiny-flag-all``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from tokenizers import pre_tokenizers
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

from generation.errors import ModelLoadError

_log = logging.getLogger(__name__)

BUILTIN_SOURCES = ("builtin:tiny", "builtin:tiny-xl", "builtin:sd15-random", "builtin:sdxl-random")
_XL_SOURCES = ("builtin:tiny-xl", "builtin:sdxl-random")
_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
# A few merges so common words are not all single characters; the real CLIP has ~49k.
_WORDS = ("the", "a", "of", "and", "in", "with", "red", "fox", "snow", "cat", "dog", "photo", "portrait", "painting")


def build_tokenizer(max_length: int = 77) -> Any:
    """A byte-level BPE CLIPTokenizer over the 256 byte symbols plus a few merges, built locally."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for token in (*_SPECIALS, *alphabet, *(f"{char}</w>" for char in alphabet)):
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in _WORDS:
        # Merge left to right: "r e" -> "re", "re d</w>" -> "red</w>".
        current = word[0]
        for index, char in enumerate(word[1:], start=1):
            suffix = "</w>" if index == len(word) - 1 else ""
            merge = (current, f"{char}{suffix}")
            current = f"{current}{char}{suffix}"
            if merge not in merges:
                merges.append(merge)
            vocab.setdefault(current, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def _tiny_parts(vocab_size: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    unet = {
        "block_out_channels": (32, 64), "layers_per_block": 1, "sample_size": 8, "in_channels": 4, "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": 32, "attention_head_dim": 4, "norm_num_groups": 8,
    }
    # Four VAE blocks: the same 8x downscale as real SD, so sizes and latents behave alike.
    vae = {
        "block_out_channels": (8, 8, 16, 16), "layers_per_block": 1, "in_channels": 3, "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
        "latent_channels": 4, "norm_num_groups": 8, "sample_size": 64,
    }
    text = {
        "vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 77, "projection_dim": 32,
    }
    return unet, vae, text


def _tiny_xl_parts(vocab_size: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    unet, vae, text = _tiny_parts(vocab_size)
    unet.update(
        attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 1),
        # SDXL's UNet reads both encoders' hidden states side by side (32 + 32) and six size/crop numbers
        # embedded at 8 dims each plus the second encoder's pooled 32-dim projection.
        cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,
    )
    return unet, vae, text


def _sd15_parts(vocab_size: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    unet = {
        "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "sample_size": 64,
        "in_channels": 4, "out_channels": 4, "cross_attention_dim": 768, "attention_head_dim": 8,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "norm_num_groups": 32,
    }
    vae = {
        "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "in_channels": 3, "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
        "latent_channels": 4, "norm_num_groups": 32, "sample_size": 512,
    }
    # CLIP ViT-L/14's text tower; the small local tokenizer only uses the first ids of its vocabulary.
    text = {
        "vocab_size": max(vocab_size, 49408), "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
        "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
    }
    return unet, vae, text


def _sdxl_parts(vocab_size: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    unet = {
        "block_out_channels": (320, 640, 1280), "layers_per_block": 2, "sample_size": 128,
        "in_channels": 4, "out_channels": 4, "norm_num_groups": 32,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20), "use_linear_projection": True,
        # Both encoders' hidden states side by side (768 + 1280); six size/crop numbers at 256 dims each plus
        # the second encoder's pooled 1280-dim projection.
        "cross_attention_dim": 2048, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 6 * 256 + 1280,
    }
    _, vae, text = _sd15_parts(vocab_size)
    # SDXL's VAE: SD's shape, its own latent scale, and decoded in float32 (it overflows in float16).
    vae = {**vae, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
    return unet, vae, text


# OpenCLIP ViT-bigG/14's text tower: SDXL's second encoder.
_BIG_G_TEXT = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
               "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 1280}


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    # Deterministic weights without disturbing the caller's global RNG streams.
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def build_builtin(source: str, *, device: Any = "cpu", dtype: Any = None, seed: int = 0) -> Any:
    """A pipeline with random weights, built directly on ``device`` (fast on a GPU) and deterministically."""
    if source not in BUILTIN_SOURCES:
        raise ModelLoadError(f"unknown builtin model {source!r}; allowed: {', '.join(BUILTIN_SOURCES)}")
    tokenizer = build_tokenizer()
    parts = {"builtin:tiny": _tiny_parts, "builtin:tiny-xl": _tiny_xl_parts,
             "builtin:sdxl-random": _sdxl_parts}.get(source, _sd15_parts)
    unet_config, vae_config, text_config = parts(len(tokenizer))
    text_config = {**text_config, "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id}
    torch_device = torch.device(device)
    betas: dict[str, Any] = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                             "num_train_timesteps": 1000, "steps_offset": 1}
    with _seeded(seed), torch_device:
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(**vae_config)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
        text_config_2 = {**text_config, **_BIG_G_TEXT} if source == "builtin:sdxl-random" else text_config
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_config_2)) if source in _XL_SOURCES else None
    if text_encoder_2 is not None:
        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=build_tokenizer(), unet=unet,
            scheduler=EulerDiscreteScheduler(**betas, timestep_spacing="leading"),
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            scheduler=PNDMScheduler(**betas, skip_prk_steps=True, set_alpha_to_one=False),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    if dtype is not None and dtype != torch.float32:
        pipe.to(dtype=dtype)
    _log.info("built %s on %s (%d UNet parameters)", source, torch_device, sum(p.numel() for p in unet.parameters()))
    return pipe


def build_tiny_safety_checker(*, flag_all: bool, seed: int = 0) -> tuple[Any, Any]:
    """diffusers' ``StableDiffusionSafetyChecker`` with a tiny random CLIP vision tower, and its feature extractor.

    The class flags an image when its cosine similarity (between -1 and 1) to a concept embedding exceeds that
    concept's threshold. Thresholds of -10 make every image score above all of them, thresholds of 10 none:
    the verdict is deterministic whatever the random weights and the image, as tests need."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    side, projection = 32, 16
    tower = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}
    text = {**tower, "vocab_size": 99, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}  # unused by the class
    vision = {**tower, "image_size": side, "patch_size": 8}
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection)
    with _seeded(seed):
        checker = StableDiffusionSafetyChecker(config)
        checker.concept_embeds.data = torch.randn(17, projection)
        checker.special_care_embeds.data = torch.randn(3, projection)
    threshold = -10.0 if flag_all else 10.0
    checker.concept_embeds_weights.data.fill_(threshold)
    checker.special_care_embeds_weights.data.fill_(threshold)
    processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return checker.eval(), processor
