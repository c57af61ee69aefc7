"""Validation and configuration messages, and the torch-free import promise of the light modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from generation.config import GenerationConfig, ModelConfig, load_generation_config
from generation.errors import ConfigError, InvalidRequest
from generation.request import GenerationRequest, validate

REPO = Path(__file__).resolve().parent.parent


def test_validation_names_every_bad_field_with_its_value_and_the_allowed_range() -> None:
    name, model = GenerationConfig().model(None)
    bad = GenerationRequest(
        prompt="  ", width=100, height=2048, steps=0, guidance=99.0, count=9, seed=-1, scheduler="warp"
    )
    with pytest.raises(InvalidRequest) as caught:
        validate(bad, name, model)
    message = str(caught.value)
    for fragment in (
        "prompt is empty",
        "width 100 is not a multiple of 8",
        "height 2048 is out of range",
        "allowed: 64 to 512",
        "steps 0 is out of range",
        "guidance 99",
        "count 9",
        "seed -1",
        "scheduler 'warp'",
    ):
        assert fragment in message, fragment
    assert len(caught.value.problems) >= 8


def test_validation_fills_defaults_and_seeds() -> None:
    name, model = GenerationConfig().model(None)
    request = validate(GenerationRequest(prompt="fox", count=3), name, model, random_seed=41)
    assert (request.width, request.height, request.steps, request.model) == (64, 64, 4, "tiny")
    assert request.seeds() == [41, 42, 43]


def test_config_errors_name_the_key_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("models:\n  default: sd\n  sd:\n    source: builtin:tiny\n    max_stepz: 10\n")
    with pytest.raises(ConfigError) as caught:
        load_generation_config(path)
    assert "models.sd.max_stepz (line 5)" in str(caught.value) and "unknown key" in str(caught.value)


def test_unconfigured_default_model_names_models_default_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("models:\n  default: sdxl\n  sd:\n    source: builtin:tiny\n")
    with pytest.raises(ConfigError) as caught:
        load_generation_config(path)
    assert "models.default (line 2): default model 'sdxl' is not configured; configured models: sd" in str(caught.value)


def test_model_defaults_beyond_maxima_are_refused() -> None:
    with pytest.raises(ValueError, match="default_steps 60 exceeds max_steps 50"):
        ModelConfig(source="builtin:tiny", default_steps=60)


def test_light_modules_do_not_import_torch() -> None:
    code = (
        "import sys, generation, generation.request, generation.interface, generation.config, "
        "generation.executor, generation.cli; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'discord') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_lcm_steps_and_size_multiples_name_what_is_allowed() -> None:
    import pytest
    from pydantic import ValidationError

    from generation.config import ModelConfig
    from generation.errors import InvalidRequest
    from generation.request import GenerationRequest, validate

    model = ModelConfig(source="builtin:tiny", max_steps=100)
    with pytest.raises(InvalidRequest) as caught:
        validate(GenerationRequest("a fox", steps=60, scheduler="lcm"), "tiny", model)
    assert "steps 60 is too many for the lcm scheduler; allowed: 1 to 50" in str(caught.value)
    with pytest.raises(ValidationError, match="multiple of 8"):
        ModelConfig(source="builtin:tiny", size_multiple=12)
