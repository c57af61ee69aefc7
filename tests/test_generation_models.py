"""Model sources and the loaded-model LRU, all offline."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from generation.builtin import build_builtin
from generation.config import ExecutorConfig, GenerationConfig, ModelConfig
from generation.errors import ModelLoadError
from generation.request import GenerationRequest, GenerationResult, validate
from generation.runner import Runner

TINY_LIMITS = {"default_steps": 4, "default_width": 64, "default_height": 64}


def config_with(models: dict[str, ModelConfig], **executor: Any) -> GenerationConfig:
    return GenerationConfig(
        default_model="tiny",
        models={"tiny": ModelConfig(source="builtin:tiny", **TINY_LIMITS), **models},
        executor=ExecutorConfig(device="cpu", **executor),
    )


def run_one(runner: Runner, model: str, seed: int = 5) -> Any:
    name, limits = runner.config.model(model)
    return runner.run([validate(GenerationRequest(prompt="a red fox", seed=seed), name, limits)])[0]


def test_builtin_tiny_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)
    first = build_builtin("builtin:tiny")
    assert torch.equal(torch.rand(3), expected_next)
    second = build_builtin("builtin:tiny")
    for (name, a), (_, b) in zip(first.unet.state_dict().items(), second.unet.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert sum(p.numel() for p in first.unet.parameters()) < 2_000_000


def test_local_folder_saved_with_save_pretrained_loads_through_from_pretrained(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-sd"
    build_builtin("builtin:tiny").save_pretrained(folder)
    runner = Runner(config_with({"local": ModelConfig(source=str(folder), **TINY_LIMITS)}, max_loaded_models=2))
    from_folder, builtin = run_one(runner, "local"), run_one(runner, "tiny")
    assert isinstance(from_folder, GenerationResult) and isinstance(builtin, GenerationResult)
    # Same weights, same seed: the same picture, whichever way the model arrived.
    assert np.array_equal(np.asarray(from_folder.images[0]), np.asarray(builtin.images[0]))
    assert runner.loaded_models() == ["local", "tiny"]


def test_lru_keeps_at_most_max_loaded_models(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-sd"
    build_builtin("builtin:tiny").save_pretrained(folder)
    runner = Runner(config_with({"local": ModelConfig(source=str(folder), **TINY_LIMITS)}, max_loaded_models=1))
    first = run_one(runner, "tiny")
    cached = run_one(runner, "tiny")
    run_one(runner, "local")
    assert runner.loaded_models() == ["local"]
    reloaded = run_one(runner, "tiny")
    assert first.timings.load_s > 0 and cached.timings.load_s == 0 and reloaded.timings.load_s > 0


def test_single_file_checkpoint_offline_is_a_clear_model_load_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    checkpoint = tmp_path / "model.safetensors"
    save_file(
        {
            f"model.diffusion_model.{k}": v.contiguous()
            for k, v in build_builtin("builtin:tiny").unet.state_dict().items()
        },
        str(checkpoint),
    )
    runner = Runner(config_with({"ckpt": ModelConfig(source=str(checkpoint), **TINY_LIMITS)}))
    outcome = run_one(runner, "ckpt")
    assert isinstance(outcome, ModelLoadError)
    assert "model.safetensors" in str(outcome) and "diffusers folder" in str(outcome)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("someone/model-that-is-not-cached", "hub repo"),
        ("./no/such/folder", "neither an existing folder"),
        ("builtin:huge", "allowed builtins"),
    ],
)
def test_unloadable_sources_fail_the_request_with_the_source_named(source: str, expected: str) -> None:
    runner = Runner(config_with({"broken": ModelConfig(source=source, **TINY_LIMITS)}))
    outcome = run_one(runner, "broken")
    assert isinstance(outcome, ModelLoadError)
    assert "broken" in str(outcome) and expected in str(outcome)
    # The runner is still fine for other models.
    assert isinstance(run_one(runner, "tiny"), GenerationResult)


def test_configured_tiny_preview_decoder_gives_full_size_previews(tmp_path: Path) -> None:
    from diffusers import AutoencoderTiny

    decoder_dir = tmp_path / "taesd"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1),
            num_decoder_blocks=(1, 1, 1, 1),
        ).save_pretrained(decoder_dir)
    model = ModelConfig(source="builtin:tiny", preview_decoder=str(decoder_dir), **TINY_LIMITS)
    runner = Runner(config_with({"previewed": model}, preview_every_steps=2))
    name, limits = runner.config.model("previewed")
    events: list[Any] = []
    runner.run([validate(GenerationRequest(prompt="fox", seed=1, steps=6), name, limits)], events.append)
    previews = [event.preview for event in events if event.preview is not None]
    assert previews and all(preview.size == (64, 64) for preview in previews)


def test_the_builtin_random_taesd_previews_with_the_real_architecture() -> None:
    """``builtin:taesd-random`` (what bench.previews measures): TAESD's own layers, random weights, no download."""
    model = ModelConfig(source="builtin:tiny", preview_decoder="builtin:taesd-random", **TINY_LIMITS)
    runner = Runner(config_with({"previewed": model}, preview_every_steps=2))
    decoder = runner.model("previewed").preview_decoder
    assert type(decoder).__name__ == "AutoencoderTiny" and list(decoder.config.decoder_block_out_channels) == [64] * 4
    name, limits = runner.config.model("previewed")
    events: list[Any] = []
    runner.run([validate(GenerationRequest(prompt="fox", seed=1, steps=6), name, limits)], events.append)
    previews = [event.preview for event in events if event.preview is not None]
    assert len(previews) == 2 and all(preview.size == (64, 64) for preview in previews)


def test_sdxl_family_txt2img_img2img_and_local_folder(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-xl"
    build_builtin("builtin:tiny-xl").save_pretrained(folder)
    runner = Runner(config_with({
        "xl": ModelConfig(source="builtin:tiny-xl", family="sdxl", **TINY_LIMITS),
        "xl-folder": ModelConfig(source=str(folder), family="sdxl", **TINY_LIMITS),
    }, max_loaded_models=2))
    built, loaded = run_one(runner, "xl"), run_one(runner, "xl-folder")
    assert isinstance(built, GenerationResult) and isinstance(loaded, GenerationResult)
    assert np.array_equal(np.asarray(built.images[0]), np.asarray(loaded.images[0]))
    model = runner.model("xl-folder")
    assert type(model.pipe).__name__ == "StableDiffusionXLPipeline"
    name, limits = runner.config.model("xl")
    buffer = io.BytesIO()
    built.images[0].save(buffer, format="PNG")
    request = GenerationRequest(prompt="a red fox", seed=2, init_image=buffer.getvalue(), strength=0.5, steps=6)
    [img2img] = runner.run([validate(request, name, limits)])
    assert isinstance(img2img, GenerationResult) and img2img.images[0].size == (64, 64)
    xl = runner.model("xl")
    assert xl.pipeline("img2img").text_encoder_2 is xl.pipe.text_encoder_2


def test_sdxl_batch_with_and_without_negatives_matches_single_runs() -> None:
    runner = Runner(config_with({"xl": ModelConfig(source="builtin:tiny-xl", family="sdxl", **TINY_LIMITS)}))
    name, limits = runner.config.model("xl")
    plain = validate(GenerationRequest(prompt="a fox", seed=4, steps=3), name, limits)
    negated = validate(GenerationRequest(prompt="a fox", negative_prompt="snow", seed=4, steps=3), name, limits)
    batched = runner.run([plain, negated])
    alone = [runner.run([plain])[0], runner.run([negated])[0]]
    for together, single in zip(batched, alone, strict=True):
        assert isinstance(together, GenerationResult) and isinstance(single, GenerationResult)
        difference = np.abs(np.asarray(together.images[0], dtype=int) - np.asarray(single.images[0], dtype=int))
        assert difference.max() <= 2
    # Without a negative prompt SDXL uses zeroed negative embeddings, so the two images differ.
    assert not np.array_equal(np.asarray(batched[0].images[0]), np.asarray(batched[1].images[0]))


def test_sdxl_without_a_negative_prompt_matches_the_pipeline_called_without_one() -> None:
    runner = Runner(config_with({"xl": ModelConfig(source="builtin:tiny-xl", family="sdxl", **TINY_LIMITS)}))
    name, limits = runner.config.model("xl")
    [ours] = runner.run([validate(GenerationRequest(prompt="a fox", seed=4, steps=3), name, limits)])
    assert isinstance(ours, GenerationResult)
    pipe = runner.model("xl").pipe
    reference = pipe(prompt=["a fox"], num_inference_steps=3, guidance_scale=ours.request.guidance, width=64,
                     height=64, generator=[torch.Generator("cpu").manual_seed(4)], output_type="pil").images[0]
    difference = np.abs(np.asarray(ours.images[0], dtype=int) - np.asarray(reference, dtype=int))
    assert difference.max() <= 2
