"""The synchronous core on builtin:tiny: images, seeds, batching, img2img, faults."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from generation.errors import GenerationFailed
from generation.request import GenerationResult
from generation.runner import PipelineCall, Runner


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_tiny_generation_end_to_end(runner: Runner, make_request: Callable[..., Any]) -> None:
    request = make_request(seed=42, count=2, width=96, height=64)
    [result] = runner.run([request])
    assert isinstance(result, GenerationResult)
    assert [image.size for image in result.images] == [(96, 64), (96, 64)]
    assert result.seeds == [42, 43]
    assert result.timings.load_s > 0 and result.timings.denoise_s > 0 and result.timings.decode_s > 0
    assert result.warnings == [] and result.nsfw == []
    # Different seeds really give different noise.
    assert np.abs(pixels(result.images[0]) - pixels(result.images[1])).max() > 10
    with Image.open(io.BytesIO(result.png_bytes(1))) as saved:
        assert "Seed: 43" in saved.text["parameters"]


def test_same_seed_same_pixels_and_image_depends_on_its_seed_alone(
    runner: Runner, make_request: Callable[..., Any]
) -> None:
    first = runner.run([make_request(seed=7)])[0]
    again = runner.run([make_request(seed=7)])[0]
    # Image 2 of a count=2 request starting at seed 6 is the seed-7 image.
    second_of_two = runner.run([make_request(seed=6, count=2)])[0]
    assert isinstance(first, GenerationResult) and isinstance(again, GenerationResult)
    assert isinstance(second_of_two, GenerationResult)
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    assert np.abs(pixels(first.images[0]) - pixels(second_of_two.images[1])).max() <= 2


def test_batch_of_three_matches_three_single_runs(runner: Runner, make_request: Callable[..., Any]) -> None:
    requests = [
        make_request("a red fox", seed=1),
        make_request("a cat", seed=50, count=2),
        make_request("a dog", negative_prompt="blurry", seed=900),
    ]
    batch = runner.run(requests)
    for request, batched in zip(requests, batch, strict=True):
        [single] = runner.run([request])
        assert isinstance(batched, GenerationResult) and isinstance(single, GenerationResult)
        assert batched.seeds == single.seeds
        for a, b in zip(batched.images, single.images, strict=True):
            assert np.abs(pixels(a) - pixels(b)).max() <= 2


def test_batch_larger_than_max_batch_images_is_split_without_changing_images(
    tiny_config: Any, make_request: Callable[..., Any]
) -> None:
    seen: list[PipelineCall] = []
    small = Runner(
        tiny_config.model_copy(update={"executor": tiny_config.executor.model_copy(update={"max_batch_images": 2})}),
        fault_hook=seen.append,
    )
    requests = [make_request(seed=1, count=3), make_request(seed=10, count=2)]
    outcomes = small.run(requests)
    assert [len(call.seeds) for call in seen] == [2, 2, 1]
    [alone] = small.run([make_request(seed=11)])
    assert isinstance(outcomes[1], GenerationResult) and isinstance(alone, GenerationResult)
    assert np.abs(pixels(outcomes[1].images[1]) - pixels(alone.images[0])).max() <= 2


def test_img2img_uses_the_same_components_and_keeps_the_input_size(
    runner: Runner, make_request: Callable[..., Any]
) -> None:
    source = Image.new("RGB", (200, 100), (200, 30, 30))
    request = make_request(init_image=png(source), strength=0.5, steps=8, width=64, height=64)
    [result] = runner.run([request])
    assert isinstance(result, GenerationResult)
    assert result.images[0].size == (64, 64)
    # The input image steers the result (random weights reconstruct nothing, but the input matters).
    other = make_request(init_image=png(Image.new("RGB", (64, 64), (10, 10, 240))), strength=0.5, steps=8)
    [other_result] = runner.run([other])
    assert isinstance(other_result, GenerationResult)
    assert np.abs(pixels(result.images[0]) - pixels(other_result.images[0])).max() > 5
    model = runner.model(None)
    img2img, txt2img = model.pipeline("img2img"), model.pipeline("txt2img")
    assert type(img2img) is not type(txt2img)
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert getattr(img2img, name) is getattr(txt2img, name)
    with Image.open(io.BytesIO(result.png_bytes(0))) as saved:
        assert "Denoising strength: 0.5" in saved.text["parameters"]


def test_undecodable_init_image_fails_only_that_request(runner: Runner, make_request: Callable[..., Any]) -> None:
    good = make_request(init_image=png(Image.new("RGB", (64, 64), "blue")), strength=0.5, steps=4)
    bad = make_request(init_image=b"not an image at all", strength=0.5, steps=4, seed=2)
    outcomes = runner.run([good, bad])
    assert isinstance(outcomes[0], GenerationResult)
    assert isinstance(outcomes[1], GenerationFailed)
    assert str(outcomes[1]) == "the input image is not a PNG, JPEG or WebP image; allowed: PNG, JPEG or WebP"


def test_an_init_image_in_another_format_fails_naming_what_is_allowed(runner: Runner,
                                                                     make_request: Callable[..., Any]) -> None:
    """The runner decodes PNG, JPEG or WebP only: a stored or uploaded TIFF never reaches Pillow's TIFF code."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "olive").save(buffer, format="TIFF")
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(jpeg, format="JPEG")
    scan = make_request(init_image=buffer.getvalue(), strength=0.5, steps=4)
    photo = make_request(init_image=jpeg.getvalue(), strength=0.5, steps=4, seed=2)
    outcomes = runner.run([scan, photo])
    assert isinstance(outcomes[0], GenerationFailed)
    assert str(outcomes[0]) == "the input image is a TIFF image; allowed: PNG, JPEG or WebP"
    assert isinstance(outcomes[1], GenerationResult)


def test_long_prompt_warns_about_truncation(runner: Runner, make_request: Callable[..., Any]) -> None:
    prompt = "a red fox " + " ".join(f"detail{index}" for index in range(60))
    [result] = runner.run([make_request(prompt)])
    assert isinstance(result, GenerationResult)
    assert len(result.warnings) == 1
    assert "The prompt is too long" in result.warnings[0] and "reads only 77" in result.warnings[0]
    assert "detail59" in result.warnings[0] or "…" in result.warnings[0]


def test_injected_cuda_oom_splits_the_batch_and_fails_only_the_request_that_does_not_fit(
    tiny_config: Any, make_request: Callable[..., Any]
) -> None:
    calls: list[PipelineCall] = []

    def member_one_never_fits(call: PipelineCall) -> None:
        calls.append(call)
        if 1 in call.members:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    runner = Runner(tiny_config, fault_hook=member_one_never_fits)
    requests = [make_request("fox", seed=1), make_request("cat", seed=20, count=2), make_request("owl", seed=300)]
    outcomes = runner.run(requests)
    assert isinstance(outcomes[0], GenerationResult) and isinstance(outcomes[2], GenerationResult)
    assert isinstance(outcomes[1], GenerationFailed)
    assert str(outcomes[1]) == "the GPU ran out of memory at 64x64, even one image at a time; try a smaller size"
    # All four images, then halves, then single images; member 1's second image is not tried again.
    assert [call.members for call in calls] == [(0, 1, 1, 2), (0, 1), (0,), (1,), (2,)]
    # The survivors are the images a plain run gives.
    clean = Runner(tiny_config).run([requests[2]])[0]
    assert isinstance(clean, GenerationResult)
    assert np.abs(pixels(outcomes[2].images[0]) - pixels(clean.images[0])).max() <= 2


def test_transient_oom_is_retried_and_everybody_gets_images(tiny_config: Any, make_request: Callable[..., Any]) -> None:
    def oom_above_one_image(call: PipelineCall) -> None:
        if len(call.seeds) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")

    runner = Runner(tiny_config, fault_hook=oom_above_one_image)
    outcomes = runner.run([make_request(seed=1, count=2), make_request(seed=5)])
    assert all(isinstance(outcome, GenerationResult) for outcome in outcomes)
    assert [len(outcome.images) for outcome in outcomes if isinstance(outcome, GenerationResult)] == [2, 1]


def test_a_crash_fails_the_batch_and_the_runner_keeps_serving(
    tiny_config: Any, make_request: Callable[..., Any]
) -> None:
    crashes = [RuntimeError("simulated driver hiccup")]

    def crash_once(_call: PipelineCall) -> None:
        if crashes:
            raise crashes.pop()

    runner = Runner(tiny_config, fault_hook=crash_once)
    failed = runner.run([make_request(seed=1)])[0]
    assert isinstance(failed, GenerationFailed) and "simulated driver hiccup" in str(failed)
    assert isinstance(runner.run([make_request(seed=1)])[0], GenerationResult)


def test_previews_arrive_on_preview_steps(runner: Runner, make_request: Callable[..., Any]) -> None:
    events: list[Any] = []
    runner.run([make_request(steps=6)], events.append)
    # Counted as asked, 1 to 6, though the tiny model's PNDM scheduler runs a warm-up step more (7).
    assert [(event.step, event.total) for event in events] == [(step, 6) for step in range(1, 7)]
    with_preview = [event for event in events if event.preview is not None]
    assert [event.step for event in with_preview] == [2, 4]  # none on the last step: the result follows
    # The linear preview is at latent resolution: 1/8 of the 64x64 image.
    assert with_preview[0].preview.size == (8, 8)


@pytest.mark.parametrize("steps, strength, shown", [(4, None, 4), (25, None, 25), (8, 0.5, 4), (25, 0.3, 7)])
def test_progress_counts_from_1_to_the_steps_asked_for(runner: Runner, make_request: Callable[..., Any],
                                                       steps: int, strength: float | None, shown: int) -> None:
    """PNDM runs a warm-up step more than asked (a 4-step request showed "step 1/5"): the count a member sees
    runs 1 to the steps asked for, with an input image the steps x strength that denoise it."""
    image = None
    if strength is not None:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 40, 40)).save(buffer, format="PNG")
        image = buffer.getvalue()
    events: list[Any] = []
    runner.run([make_request(steps=steps, init_image=image, strength=strength)], events.append)
    assert [(event.step, event.total) for event in events] == [(step, shown) for step in range(1, shown + 1)]


def test_scheduler_choice_changes_the_image_and_default_is_restored(
    runner: Runner, make_request: Callable[..., Any]
) -> None:
    default = runner.run([make_request(seed=3)])[0]
    euler_a = runner.run([make_request(seed=3, scheduler="euler_a")])[0]
    default_again = runner.run([make_request(seed=3)])[0]
    assert isinstance(default, GenerationResult) and isinstance(euler_a, GenerationResult)
    assert isinstance(default_again, GenerationResult)
    assert np.abs(pixels(default.images[0]) - pixels(euler_a.images[0])).max() > 5
    assert np.array_equal(pixels(default.images[0]), pixels(default_again.images[0]))
    with Image.open(io.BytesIO(euler_a.png_bytes(0))) as saved:
        assert "Sampler: Euler a" in saved.text["parameters"]
    with Image.open(io.BytesIO(default.png_bytes(0))) as saved:
        assert "Sampler: PNDM," in saved.text["parameters"]  # "default" is the model's own: PNDM for the tiny one


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m_karras", "lcm", "unipc", "euler", "pndm", "dpmpp_2m"])
def test_every_scheduler_name_runs(runner: Runner, make_request: Callable[..., Any], name: str) -> None:
    [result] = runner.run([make_request(scheduler=name, steps=3)])
    assert isinstance(result, GenerationResult) and result.images[0].size == (64, 64)


def test_a_reloaded_config_adds_models_without_a_restart(runner: Any, tiny_config: Any) -> None:
    from generation.config import ModelConfig
    from generation.request import GenerationRequest, validate

    added = ModelConfig(source="builtin:tiny", default_steps=2, default_width=64, default_height=64,
                        max_width=128, max_height=128)
    runner.use_models(tiny_config.model_copy(update={"models": {**tiny_config.models, "fresh": added}}))
    request = validate(GenerationRequest("a fox", seed=3), "fresh", added)
    [outcome] = runner.run([request])
    assert outcome.images[0].size == (64, 64)
    assert outcome.request.model == "fresh"


def test_an_oversized_init_image_is_refused_before_decoding(runner: Runner,
                                                             make_request: Callable[..., Any]) -> None:
    good = make_request(init_image=png(Image.new("RGB", (64, 64), "blue")), strength=0.5, steps=4)
    huge = make_request(init_image=png(Image.new("1", (20000, 8))), strength=0.5, steps=4, seed=2)
    outcomes = runner.run([good, huge])
    assert isinstance(outcomes[0], GenerationResult)
    assert isinstance(outcomes[1], GenerationFailed)
    assert "20000x8; allowed: at most 4096 pixels on each side" in str(outcomes[1])


def test_changing_a_models_limits_keeps_its_weights_loaded(runner: Runner, tiny_config: Any) -> None:
    before = runner.model("tiny")
    relaxed = tiny_config.models["tiny"].model_copy(update={"max_steps": 80, "cost_weight": 0.5})
    runner.use_models(tiny_config.model_copy(update={"models": {"tiny": relaxed}}))
    after = runner.model("tiny")
    assert after.pipe is before.pipe and after.config.max_steps == 80
    renamed = relaxed.model_copy(update={"source": "builtin:tiny-xl", "family": "sdxl"})
    runner.use_models(tiny_config.model_copy(update={"models": {"tiny": renamed}}))
    assert runner.model("tiny").pipe is not before.pipe  # new weights: loaded anew


def test_a_request_that_waited_through_a_stricter_reload_is_refused_with_the_new_limit(
        runner: Runner, tiny_config: Any, make_request: Callable[..., Any]) -> None:
    from generation.errors import InvalidRequest

    waiting = make_request(width=128, height=128)
    stricter = tiny_config.models["tiny"].model_copy(update={"max_width": 64, "max_height": 64})
    runner.use_models(tiny_config.model_copy(update={"models": {"tiny": stricter}}))
    [outcome] = runner.run([waiting])
    assert isinstance(outcome, InvalidRequest)
    assert "width 128 is out of range; allowed: 64 to 64" in str(outcome)
