"""LoRAs in config.yaml and in validation (torch-free): the ``loras:`` section, refusals that list the LoRAs
that fit the model, the per-request cap, trigger words, and batching only with the same LoRAs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bot.core.config import parse_config
from bot.discord_ui.texts import result_message_text
from generation.config import GenerationConfig, LoraConfig, ModelConfig
from generation.errors import ConfigError, InvalidRequest
from generation.request import GenerationRequest, LoraChoice, compatibility_key, lora_tags, validate

LORAS = """\
models:
  default: sd15
  sd15: {source: 'builtin:tiny', family: sd1, default_width: 64, default_height: 64}
  xl: {source: 'builtin:tiny-xl', family: sdxl, default_width: 64, default_height: 64}
loras:
  max_per_request: 2
  ink:
    source: loras/ink.safetensors
    families: [sd1, sd2]
    default_weight: 0.8
    trigger_words: [ink style]
  fur:
    source: someone/fur-lora
    weight_name: fur.safetensors
    families: [sd1]
  glow:
    source: /srv/loras/glow.safetensors
    families: [sdxl]
"""


@pytest.fixture
def generation() -> GenerationConfig:
    return parse_config(LORAS).generation


def check(generation: GenerationConfig, *loras: LoraChoice, model: str = "sd15", prompt: str = "a fox",
          **fields: Any) -> GenerationRequest:
    name, limits = generation.model(model)
    return validate(GenerationRequest(prompt, seed=1, loras=loras, **fields), name, limits,
                    loras=generation)


def problems(generation: GenerationConfig, *loras: LoraChoice, model: str = "sd15") -> list[str]:
    with pytest.raises(InvalidRequest) as caught:
        check(generation, *loras, model=model)
    return caught.value.problems


def test_the_loras_section_is_read(generation: GenerationConfig) -> None:
    assert generation.max_loras_per_request == 2
    assert generation.loras["ink"] == LoraConfig(source="loras/ink.safetensors", families=["sd1", "sd2"],
                                                 default_weight=0.8, trigger_words=["ink style"])
    assert generation.loras["fur"].weight_name == "fur.safetensors" and generation.loras["fur"].default_weight == 1
    assert parse_config("").generation.loras == {} and parse_config("").generation.max_loras_per_request == 3


@pytest.mark.parametrize(("entry", "key", "said"), [
    ("ink: {source: a.safetensors, families: [sd1], default_weight: 2.5}", "loras.ink.default_weight (line 2)",
     "2.5 is out of range; allowed: -2 to 2"),
    ("ink: {source: a.safetensors, families: [sd1], default_weight: .nan}", "loras.ink.default_weight (line 2)",
     "nan is not a finite number; allowed: -2 to 2"),
    ("ink: {source: a.safetensors}", "loras.ink.families (line 2)", "Field required"),
    ("ink: {source: a.safetensors, families: []}", "loras.ink.families (line 2)", "at least 1 item"),
    ("ink: {source: a.safetensors, families: [sd3]}", "loras.ink.families.0 (line 2)", "'sd1', 'sd2' or 'sdxl'"),
    ("ink: {source: a.safetensors, families: [sd1], strength: 1}", "loras.ink.strength (line 2)",
     "unknown key; check the spelling"),
    ("ink: {source: owner/ink, families: [sd1]}", "loras.ink (line 2)",
     "hub source 'owner/ink' needs weight_name, the .safetensors file to load"),
    ("ink: {source: owner/ink, weight_name: ink.ckpt, families: [sd1]}", "loras.ink (line 2)",
     "needs weight_name, the .safetensors file to load (only safetensors"),
    ("ink: {source: loras/ink.pt, families: [sd1]}", "loras.ink (line 2)",
     "source 'loras/ink.pt' is a pickled file, which can run code when loaded; allowed: a .safetensors file"),
    ("ink: {source: a.safetensors, weight_name: b.safetensors, families: [sd1]}", "loras.ink (line 2)",
     "is a local file; weight_name and revision are for hub repos"),
    ("ink: {source: ink, families: [sd1]}", "loras.ink (line 2)",
     "source 'ink' is neither a .safetensors file nor a hub repo id (owner/name)"),
    ("ink.v2: {source: a.safetensors, families: [sd1]}", "loras (line 1)",
     "LoRA name 'ink.v2' is not allowed; allowed: 1 to 64 letters, digits, _ or -"),
    ("max_per_request: 0", "loras.max_per_request (line 2)", "0 is out of range; allowed: 1 to 10"),
    ("max_per_request: .inf", "loras.max_per_request (line 2)", "inf is not a finite number; allowed: 1 to 10"),
])
def test_bad_entries_are_refused_naming_key_line_and_what_is_allowed(entry: str, key: str, said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"loras:\n  {entry}\n", "config.yaml")
    message = str(caught.value)
    assert f"config.yaml: invalid configuration: {key}: " in message and said in message, message


def test_loras_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="loras must be a mapping of names to LoRAs"):
        parse_config("loras: [ink]\n")


def test_a_known_lora_that_fits_is_accepted_with_its_trigger_words(generation: GenerationConfig) -> None:
    request = check(generation, ("ink", 0.5), ("fur", -1.0))
    assert request.loras == (("ink", 0.5), ("fur", -1.0)) and request.prompt == "a fox, ink style"
    # Validating again (a reroll, a resume, the runner's check) adds nothing; a prompt that has them keeps them.
    assert validate(request, "sd15", generation.models["sd15"], loras=generation).prompt == "a fox, ink style"
    assert check(generation, ("ink", 1.0), prompt="an Ink Style fox").prompt == "an Ink Style fox"
    # Weight 0 is no LoRA: no trigger words either.
    assert check(generation, ("ink", 0.0)).prompt == "a fox"


def test_unknown_and_wrong_family_loras_are_refused_with_the_list_that_fits(generation: GenerationConfig) -> None:
    assert problems(generation, ("nope", 1.0)) == ["unknown LoRA 'nope'; LoRAs for model sd15: fur, ink"]
    assert problems(generation, ("glow", 1.0)) == [
        "LoRA 'glow' is made for sdxl models, not for model sd15 (sd1); LoRAs for model sd15: fur, ink"]
    assert problems(generation, ("ink", 1.0), model="xl") == [
        "LoRA 'ink' is made for sd1, sd2 models, not for model xl (sdxl); LoRAs for model xl: glow"]
    tiny = GenerationConfig()  # no loras: section at all
    name, model = tiny.model(None)
    with pytest.raises(InvalidRequest, match="unknown LoRA 'ink'; LoRAs for model tiny: none"):
        validate(GenerationRequest("a fox", loras=(("ink", 1.0),)), name, model, loras=tiny)
    with pytest.raises(InvalidRequest, match="unknown LoRA 'ink'; LoRAs for model tiny: none"):
        validate(GenerationRequest("a fox", loras=(("ink", 1.0),)), name, model)  # a caller without the catalog


def test_weights_count_and_duplicates_are_checked(generation: GenerationConfig) -> None:
    assert problems(generation, ("ink", 2.5)) == ["LoRA 'ink' weight 2.5 is out of range; allowed: -2 to 2"]
    assert problems(generation, ("ink", float("nan"))) == ["LoRA 'ink' weight nan is out of range; allowed: -2 to 2"]
    assert problems(generation, ("ink", 1.0), ("ink", 0.5)) == ["LoRA 'ink' is given twice; allowed: once per request"]
    assert problems(generation, ("ink", 1.0), ("fur", 1.0), ("nope", 1.0)) == [
        "3 LoRAs given; allowed: at most 2 per request", "unknown LoRA 'nope'; LoRAs for model sd15: fur, ink"]


def test_trigger_words_count_towards_the_prompt_length(generation: GenerationConfig) -> None:
    with pytest.raises(InvalidRequest, match="prompt is 2011 characters with the LoRAs' trigger words; allowed: at "
                                             "most 2000"):
        check(generation, ("ink", 1.0), prompt="x" * 2000)


def test_only_jobs_with_the_same_loras_and_weights_share_a_batch(generation: GenerationConfig) -> None:
    def key(*loras: LoraChoice) -> object:
        return compatibility_key(check(generation, *loras))

    assert key() != key(("ink", 0.8))
    assert key(("ink", 0.8)) != key(("ink", 0.5)) and key(("ink", 0.8)) != key(("fur", 0.8))
    assert key(("ink", 0.8)) != key(("ink", 0.8), ("fur", 1.0))
    assert key(("ink", 0.8), ("fur", 1.0)) == key(("fur", 1.0), ("ink", 0.8))  # the order does not matter
    assert key(("ink", 0.0)) == key()  # weight 0 runs as no LoRA


def test_a1111_tags_in_the_png_parameters_and_the_result_message(generation: GenerationConfig) -> None:
    from generation.request import GenerationResult, Timings

    request = check(generation, ("ink", 0.8), ("fur", 1.0))
    assert lora_tags(request.loras) == "<lora:ink:0.8> <lora:fur:1>"
    assert lora_tags([("a", 0.1 + 0.2)]) == "<lora:a:0.30000000000000004>"  # read back exactly
    result = GenerationResult(replace(request, width=64, height=64, steps=2, guidance=7.0), [], [1], Timings())
    assert result.parameters_text(0).splitlines()[0] == "a fox, ink style <lora:ink:0.8> <lora:fur:1>"
    text = result_message_text("a fox", 7, [1], "sd15", (64, 64), 2, 1.0, loras=[("ink_x", -0.5)])
    assert "Seed 1 · model sd15 · LoRA <lora:ink_x:-0.5> · 64×64 · 2 steps" in text
    assert "LoRAs <lora:ink:0.8> <lora:fur:1> ·" in result_message_text("a", 7, [1], "m", (64, 64), 2, 1.0,
                                                                          loras=request.loras)


def test_the_config_needs_no_model_for_its_loras() -> None:
    """A LoRA for a family no configured model has is allowed (models come and go in reloads)."""
    config = GenerationConfig(models={"m": ModelConfig(source="builtin:tiny")}, default_model="m",
                              loras={"glow": LoraConfig(source="g.safetensors", families=["sdxl"])})
    assert list(config.loras) == ["glow"]
