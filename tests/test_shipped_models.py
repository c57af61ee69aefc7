"""The shipped config.yaml serves real models (tests and CI swap in builtin:tiny), and its ready entries
behave as documented: a model switched off is refused by name, half-precision weights are fetched only
where they run in half precision, and a LoRA can be merged into a model at load (how ``fast`` gets LCM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.config import load_config
from bot.core.config_store import ConfigStore
from generation.config import GenerationConfig, ModelConfig
from generation.devices import Placement
from generation.errors import ConfigError, ModelLoadError
from generation.models import variant_for
from generation.request import GenerationRequest, validate

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config.yaml"


def test_the_shipped_config_serves_stable_diffusion_15_from_the_hub_and_ci_serves_tiny() -> None:
    """Issue: "a test that the shipped config.yaml names a real hub model as the default while CI runs
    builtin:tiny"."""
    shipped = load_config(SHIPPED).generation
    assert shipped.default_model == "sd15"
    assert shipped.models["sd15"].source == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert shipped.models["sdxl"].family == "sdxl" and not shipped.models["sdxl"].enabled
    fast = shipped.models["fast"]
    assert (fast.fuse_lora, fast.scheduler, fast.default_steps) == ("latent-consistency/lcm-lora-sdv1-5", "lcm", 4)
    assert shipped.enabled_names() == ["fast", "sd15", "tiny"]
    under_test = ConfigStore(SHIPPED, model_override="builtin:tiny").current.generation  # IMAGINE_MODEL
    assert under_test.default_model == "tiny" and under_test.models["tiny"].source == "builtin:tiny"


def test_a_switched_off_model_is_refused_with_the_models_that_serve() -> None:
    shipped = load_config(SHIPPED).generation
    with pytest.raises(ConfigError, match=r"model 'sdxl' is switched off \(models.sdxl.enabled: false\); "
                                          r"enabled models: fast, sd15, tiny"):
        shipped.model("sdxl")
    with pytest.raises(ValueError, match="default model 'big' has enabled: false"):
        GenerationConfig(default_model="big", models={"big": ModelConfig(source="a/b", enabled=False)})


@pytest.mark.parametrize(("device", "expected"), [("cuda", "fp16"), ("cuda:1", "fp16"), ("mps", "fp16"),
                                                  ("cpu", None)])
def test_variant_auto_fetches_half_precision_weights_only_where_they_run(device: str, expected: str | None) -> None:
    import torch

    auto = ModelConfig(source="a/b", variant="auto")
    assert variant_for(auto, Placement(device=device, dtype=torch.float32)) == expected
    assert variant_for(ModelConfig(source="a/b", variant="bf16"), Placement("cpu", torch.float32)) == "bf16"


def _image(config: GenerationConfig, name: str) -> bytes:
    from generation.runner import Runner

    runner = Runner(config)
    try:
        request = validate(GenerationRequest("a lantern", steps=2, seed=7), name, config.models[name])
        outcome = runner.run([request])[0]
        assert not isinstance(outcome, Exception), outcome
        return outcome.images[0].tobytes()
    finally:
        runner.close()


def test_a_merged_lora_changes_the_model_and_a_broken_one_names_the_key(tmp_path: Path) -> None:
    pytest.importorskip("peft", reason="peft is in requirements.txt; `make test` installs it")
    from generation.models import load_model
    from tests.lora_files import write_random_lora

    lora = write_random_lora(tmp_path / "style.safetensors", seed=3)
    tiny = ModelConfig(source="builtin:tiny", default_steps=2, default_width=64, default_height=64)
    config = GenerationConfig(default_model="plain", models={
        "plain": tiny, "merged": tiny.model_copy(update={"fuse_lora": str(lora)})})
    assert _image(config, "merged") != _image(config, "plain")
    broken = tiny.model_copy(update={"fuse_lora": str(tmp_path / "missing.safetensors")})
    with pytest.raises(ModelLoadError, match=r"model fast: cannot merge the LoRA .*missing.safetensors' "
                                             r"\(models.fast.fuse_lora\)"):
        load_model("fast", broken, config.executor)
