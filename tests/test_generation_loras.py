"""LoRAs through the real runner on builtin:tiny, with small random LoRAs made by peft for its UNet.

What is shown: the weight changes the image, weight 0 is exactly no LoRA, two LoRAs combine, a batch
without LoRAs after one with them is exactly a no-LoRA batch, each adapter loads once per model, and a
LoRA that does not load fails only the requests that use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from generation.config import ExecutorConfig, GenerationConfig, LoraConfig, ModelConfig
from generation.errors import FixableFailure
from generation.request import GenerationRequest, GenerationResult, LoraChoice, validate
from tests.lora_files import write_random_lora

if not os.environ.get("CI"):  # under CI a missing peft fails: it is in requirements.txt
    pytest.importorskip("peft", reason="peft (requirements.txt) is not installed; diffusers needs it for LoRAs")


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    write_random_lora(folder / "ink.safetensors", seed=1)
    write_random_lora(folder / "fur.safetensors", seed=2)
    (folder / "corrupt.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    return folder


def lora_config(folder: Path) -> GenerationConfig:
    tiny = ModelConfig(source="builtin:tiny", default_steps=3, default_width=64, default_height=64)
    return GenerationConfig(
        models={"tiny": tiny}, executor=ExecutorConfig(device="cpu", preview_every_steps=0, max_batch_images=4),
        loras={name: LoraConfig(source=str(folder / f"{name}.safetensors"), families=["sd1"])
               for name in ("ink", "fur", "corrupt", "missing")}
        | {"hub": LoraConfig(source="someone/ink-lora", weight_name="ink.safetensors", families=["sd1"])})


@pytest.fixture(scope="module")
def config(lora_dir: Path) -> GenerationConfig:
    return lora_config(lora_dir)


@pytest.fixture(scope="module")
def lora_runner(config: GenerationConfig) -> Iterator[Any]:
    from generation.runner import Runner

    runner = Runner(config)
    yield runner
    runner.close()


def request(config: GenerationConfig, loras: tuple[LoraChoice, ...] = (), seed: int = 3) -> GenerationRequest:
    name, model = config.model(None)
    return validate(GenerationRequest("a red fox", seed=seed, loras=loras), name, model, loras=config)


def pixels(outcome: object) -> np.ndarray:
    assert isinstance(outcome, GenerationResult), outcome
    return np.asarray(outcome.images[0], dtype=np.int16)


def image(runner: Any, config: GenerationConfig, *loras: LoraChoice) -> np.ndarray:
    [outcome] = runner.run([request(config, loras)])
    return pixels(outcome)


def test_the_weight_changes_the_image_and_weight_zero_is_no_lora(lora_runner: Any, config: GenerationConfig) -> None:
    plain = image(lora_runner, config)
    half = image(lora_runner, config, ("ink", 0.5))
    full = image(lora_runner, config, ("ink", 1.0))
    negative = image(lora_runner, config, ("ink", -1.0))
    zero = image(lora_runner, config, ("ink", 0.0))
    assert np.array_equal(zero, plain)
    for one, other in ((plain, half), (half, full), (plain, full), (full, negative), (plain, negative)):
        assert not np.array_equal(one, other)
    assert np.abs(full - plain).mean() > np.abs(half - plain).mean()  # more weight, further from the base


def test_two_loras_combine(lora_runner: Any, config: GenerationConfig) -> None:
    ink = image(lora_runner, config, ("ink", 1.0))
    fur = image(lora_runner, config, ("fur", 1.0))
    both = image(lora_runner, config, ("ink", 1.0), ("fur", 1.0))
    swapped = image(lora_runner, config, ("fur", 1.0), ("ink", 1.0))
    assert not np.array_equal(both, ink) and not np.array_equal(both, fur)
    assert np.array_equal(both, swapped)  # the order they are named in does not matter


def test_a_batch_without_loras_after_one_with_them_is_exactly_no_lora(config: GenerationConfig) -> None:
    from generation.runner import Runner

    fresh = Runner(config)  # a model that never had an adapter loaded
    try:
        before = image(fresh, config)
    finally:
        fresh.close()
    used = Runner(config)
    try:
        image(used, config, ("ink", 1.0), ("fur", 0.7))
        after = image(used, config)
        assert np.array_equal(after, before)
        assert not np.array_equal(image(used, config, ("ink", 1.0)), before)  # adapters turn on again
    finally:
        used.close()


def test_each_adapter_loads_once_per_model(config: GenerationConfig) -> None:
    from generation.runner import Runner

    runner = Runner(config)
    pipe = runner.model(None).pipe
    loads: list[str] = []
    real = pipe.load_lora_weights

    def counting(source: str, **kwargs: Any) -> None:
        loads.append(kwargs["adapter_name"])
        real(source, **kwargs)

    pipe.load_lora_weights = counting
    try:
        for loras in ((("ink", 1.0),), (("ink", 0.5),), (), (("ink", 1.0), ("fur", 1.0)), (("fur", 0.3),)):
            image(runner, config, *loras)
    finally:
        runner.close()
    assert loads == ["ink", "fur"]


def test_a_lora_that_does_not_load_fails_only_its_requests(lora_runner: Any, config: GenerationConfig) -> None:
    for name in ("missing", "corrupt", "hub"):  # the hub is offline in tests: not in its cache
        outcomes = lora_runner.run([request(config, ((name, 1.0),), seed=1), request(config, ((name, 1.0),), seed=2)])
        for outcome in outcomes:
            assert isinstance(outcome, FixableFailure)
            assert str(outcome) == (f"LoRA '{name}' could not be loaded on this bot; try again without it "
                                    "(the bot's operators see why in its log)")
            assert "safetensors" not in str(outcome)  # no path of the machine
    # The model still serves, with and without the good LoRAs, as if the failures never happened.
    assert np.array_equal(image(lora_runner, config, ("ink", 1.0)), image(lora_runner, config, ("ink", 1.0)))
    plain = image(lora_runner, config)
    assert np.array_equal(image(lora_runner, config, ("ink", 0.0)), plain)


def test_a_model_whose_first_lora_failed_to_load_still_serves_plain_images(config: GenerationConfig) -> None:
    from generation.runner import Runner

    runner = Runner(config)
    try:
        plain = image(runner, config)
        [failed] = runner.run([request(config, (("corrupt", 1.0),))])
        assert isinstance(failed, FixableFailure)
        assert np.array_equal(image(runner, config), plain)
    finally:
        runner.close()


def test_adapters_beyond_the_per_model_cap_are_dropped_least_recently_used_first(
        config: GenerationConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    from generation import loras
    from generation.runner import Runner

    monkeypatch.setattr(loras, "MAX_ADAPTERS_PER_MODEL", 1)
    runner = Runner(config)
    try:
        ink = image(runner, config, ("ink", 1.0))
        image(runner, config, ("fur", 1.0))
        assert runner.model(None).pipe.get_list_adapters() == {"unet": ["fur"]}
        assert np.array_equal(image(runner, config, ("ink", 1.0)), ink)  # loaded again, the same
        image(runner, config, ("ink", 1.0), ("fur", 1.0))  # a batch may use more than the cap
        assert runner.model(None).pipe.get_list_adapters() == {"unet": ["ink", "fur"]}
    finally:
        runner.close()


def test_a_lora_pointed_at_another_file_by_a_reload_is_loaded_again(lora_dir: Path) -> None:
    from generation.runner import Runner

    config = lora_config(lora_dir)
    runner = Runner(config)
    try:
        ink = image(runner, config, ("ink", 1.0))
        fur = image(runner, config, ("fur", 1.0))
        moved = config.model_copy(update={"loras": {**config.loras, "ink": config.loras["fur"]}})
        runner.use_models(moved)
        assert np.array_equal(image(runner, moved, ("ink", 1.0)), fur)
        assert not np.array_equal(image(runner, moved, ("ink", 1.0)), ink)
        removed = config.model_copy(update={"loras": {}})
        runner.use_models(removed)
        [outcome] = runner.run([request(config, (("ink", 1.0),))])  # admitted before the reload removed it
        assert "unknown LoRA 'ink'; LoRAs for model tiny: none" in str(outcome)
        image(runner, removed)  # the next batch drops the adapters of LoRAs no longer configured
        adapters = runner.model(None).pipe.get_list_adapters()
        assert all(names == [] for names in adapters.values()), adapters
    finally:
        runner.close()


def test_png_parameters_carry_the_loras_in_a1111_form(lora_runner: Any, config: GenerationConfig) -> None:
    [outcome] = lora_runner.run([request(config, (("ink", 0.8), ("fur", 1.0)))])
    assert isinstance(outcome, GenerationResult)
    assert outcome.parameters_text(0).splitlines()[0] == "a red fox <lora:ink:0.8> <lora:fur:1>"


def test_the_cli_takes_loras_by_name_and_weight(lora_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from generation.cli import EXIT_BAD_INPUT, main

    config = tmp_path / "config.yaml"
    config.write_text(f"models:\n  default: tiny\n  tiny: {{source: 'builtin:tiny', default_steps: 2}}\n"
                      f"loras:\n  ink: {{source: '{lora_dir / 'ink.safetensors'}', families: [sd1]}}\n"
                      f"  fur: {{source: '{lora_dir / 'fur.safetensors'}', families: [sd1], default_weight: 0.4}}\n")
    out = tmp_path / "fox.png"
    assert main(["a fox", "--config", str(config), "--seed", "1", "--lora", "ink:0.8", "--lora", "fur",
                 "--out", str(out)]) == 0
    with Image.open(out) as saved:
        assert saved.text["parameters"].splitlines()[0] == "a fox <lora:ink:0.8> <lora:fur:0.4>"
    assert main(["a fox", "--config", str(config), "--lora", "nope"]) == EXIT_BAD_INPUT
    assert "error: unknown LoRA 'nope'; LoRAs for model tiny: fur, ink" in capsys.readouterr().err
    assert main(["a fox", "--config", str(config), "--lora", "ink:lots"]) == EXIT_BAD_INPUT
    assert "--lora ink:lots: weight 'lots' is not a number; allowed: NAME or NAME:WEIGHT" in capsys.readouterr().err
