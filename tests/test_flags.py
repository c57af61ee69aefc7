"""Prompt flags: what a user types in the prompt becomes typed options, and mistakes are explained."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.features.imagine.flags import (
    KNOWN_FLAGS,
    Options,
    ParsedFlags,
    aspect_to_size,
    merge_options,
    parse_prompt_flags,
)
from generation.errors import InvalidRequest

ASPECTS = {"1:1": "512x512", "3:2": "768x512", "2:3": "512x768", "16:9": "912x512", "9:16": "512x912"}


def problems_of(text: str) -> list[str]:
    with pytest.raises(InvalidRequest) as info:
        parse_prompt_flags(text)
    return info.value.problems


def test_flags_are_removed_from_the_prompt_and_typed() -> None:
    parsed = parse_prompt_flags("a castle at dusk --ar 16:9 --seed 42 --steps 30 --count 2 --guidance 6.5 "
                                "--model sdxl --style photo --strength 0.6")
    assert parsed.prompt == "a castle at dusk"
    assert parsed.options == Options(aspect="16:9", seed=42, steps=30, count=2, guidance=6.5, model="sdxl",
                                     style="photo", strength=0.6)


def test_aliases_and_size() -> None:
    parsed = parse_prompt_flags("fox --aspect 2:3 --seed 7 --n 3 --cfg 4")
    assert parsed.options == Options(aspect="2:3", seed=7, count=3, guidance=4.0)
    assert parse_prompt_flags("fox --size 768x512").options.size == (768, 512)


def test_no_takes_several_words_and_several_no_are_joined() -> None:
    parsed = parse_prompt_flags("a portrait --no text watermark --seed 1 --no blurry hands")
    assert parsed.prompt == "a portrait"
    assert parsed.options.negative == "text watermark, blurry hands"
    assert parsed.options.seed == 1


def test_phone_dashes_are_flags_but_prose_dashes_are_not() -> None:
    parsed = parse_prompt_flags("a cat — with a hat, cat—dog —ar 3:2 –seed 9")
    assert parsed.prompt == "a cat — with a hat, cat—dog"
    assert parsed.options == Options(aspect="3:2", seed=9)


def test_words_after_a_single_value_flag_stay_in_the_prompt() -> None:
    parsed = parse_prompt_flags("--seed 5 a red barn   in snow")
    assert parsed.prompt == "a red barn in snow"
    assert parsed.options.seed == 5


def test_prompt_without_flags_is_unchanged_except_spacing() -> None:
    assert parse_prompt_flags("a  cat\nin a hat") == ParsedFlags("a cat in a hat", Options())


def test_bad_seed_names_flag_value_and_range() -> None:
    assert problems_of("cat --seed abc") == ["--seed abc is not a whole number; allowed: 0 to 4294967295"]
    assert problems_of("cat --seed 4294967296") == ["--seed 4294967296 is out of range; allowed: 0 to 4294967295"]


def test_stylize_is_not_steps_and_unknown_flags_list_the_known_ones() -> None:
    (problem,) = problems_of("cat --s 750")
    assert problem.startswith("--s is not a known flag")
    assert "stylize" in problem and "--steps" in problem
    assert all(flag in problem for flag in KNOWN_FLAGS)


def test_sameseed_is_refused_with_what_to_type_instead() -> None:
    """README: "Midjourney flags that would mean something else here are refused with a hint rather than
    misread: ... `--sameseed`"; Midjourney's shares one starting noise across a grid, here each image has its
    own seed."""
    (problem,) = problems_of("cat --sameseed 7")
    assert problem.startswith("--sameseed is not a known flag; every image here has its own seed (N, N+1, …); "
                              "use --seed N")


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of("cat --count 9 --ar wide --strength 2 --guidance x --steps 0 --size 10by10 --model")
    joined = "\n".join(problems)
    assert "--count 9 is out of range; allowed: 1 to 4" in joined
    assert "--ar wide is not an aspect ratio; allowed: W:H" in joined
    assert "--strength 2 is out of range; allowed: 0.05 to 1" in joined
    assert "--guidance x is not a number" in joined
    assert "--steps 0 is out of range" in joined
    assert "--size 10by10 is not a size; allowed: WIDTHxHEIGHT" in joined
    assert "--model needs a value, e.g. --model NAME" in joined
    assert len(problems) == 7


def test_conflicting_flags_are_refused() -> None:
    assert "given twice" in problems_of("cat --seed 1 --seed 2")[0]
    assert problems_of("cat --ar 1:1 --size 512x512") == ["--ar and --size both set the shape; allowed: one of them"]
    assert parse_prompt_flags("cat --seed 1 --seed 1").options.seed == 1  # repeating the same value is harmless


def test_explicit_options_win_over_flags() -> None:
    flags = parse_prompt_flags("cat --seed 1 --steps 20 --no text --size 768x512")
    merged = merge_options(flags, Options(seed=99, negative="blur", aspect="1:1"))
    assert merged.prompt == "cat"
    assert merged.options == Options(seed=99, steps=20, negative="blur", aspect="1:1")  # explicit aspect drops size


def test_configured_aspects_map_directly() -> None:
    assert aspect_to_size("16:9", 512 * 512, 8, configured=ASPECTS) == (912, 512)


def test_arbitrary_aspect_is_computed_near_the_pixel_budget() -> None:
    width, height = aspect_to_size("21:9", 1024 * 1024, 64, configured=ASPECTS)
    assert width % 64 == 0 and height % 64 == 0
    assert abs(width / height - 21 / 9) < 0.15
    assert 0.85 < width * height / (1024 * 1024) < 1.15


def test_aspect_outside_limits_names_allowed_ratios() -> None:
    with pytest.raises(InvalidRequest) as info:
        aspect_to_size("5:1", 512 * 512, 8, configured=ASPECTS)
    assert str(info.value) == (
        "aspect 5:1 is not allowed; allowed: 1:1, 3:2, 2:3, 16:9, 9:16, or any W:H from 1:4 to 4:1")
    with pytest.raises(InvalidRequest, match=r"allowed: 1:1, 3:2, 2:3, 16:9, 9:16$"):
        aspect_to_size("4:3", 512 * 512, 8, configured=ASPECTS, allow_arbitrary=False)


@given(st.integers(1, 400), st.integers(1, 400), st.sampled_from([8, 64]))
def test_computed_sizes_respect_multiple_and_ratio_limits(w: int, h: int, multiple: int) -> None:
    try:
        width, height = aspect_to_size(f"{w}:{h}", 512 * 512, multiple)
    except InvalidRequest:
        assert not 0.25 <= w / h <= 4
        return
    assert 0.25 <= w / h <= 4
    assert width % multiple == 0 and height % multiple == 0 and width >= multiple and height >= multiple


@given(st.text(st.characters(blacklist_characters="-—–"), max_size=60), st.integers(0, 2**32 - 1))
def test_any_prose_survives_with_a_seed_flag(prose: str, seed: int) -> None:
    parsed = parse_prompt_flags(f"{prose} --seed {seed}")
    assert parsed.prompt == " ".join(prose.split())
    assert parsed.options.seed == seed


def test_arbitrary_aspect_on_a_small_model_keeps_both_sides_at_least_64() -> None:
    from bot.features.imagine.flags import aspect_to_size

    assert aspect_to_size("2:1", 64 * 64, 8) == (128, 64)
    assert aspect_to_size("1:4", 64 * 64, 8) == (64, 256)


# --- LoRAs: A1111's <lora:NAME:WEIGHT> ------------------------------------------------------------


def test_lora_tags_are_taken_out_of_the_prompt_with_their_weights() -> None:
    parsed = parse_prompt_flags("a fox <lora:ink:0.8> in snow <LoRA:fur> --seed 4 <lora: glow : -1.5 >")
    assert parsed.prompt == "a fox in snow"
    assert parsed.options == Options(seed=4, loras=(("ink", 0.8), ("fur", None), ("glow", -1.5)))
    # Anywhere in the text, even inside --no's words or glued to a word; the model never sees a tag.
    parsed = parse_prompt_flags("fox<lora:ink:1>tail --no blur <lora:fur:.5> noise")
    assert parsed.prompt == "fox tail" and parsed.options.negative == "blur noise"
    assert parsed.options.loras == (("ink", 1.0), ("fur", 0.5))
    assert parse_prompt_flags("a fox <lora:ink:>").options.loras == (("ink", None),)  # empty weight: the default


@pytest.mark.parametrize(("text", "problem"), [
    ("a fox <lora:ink:strong>", "<lora:ink:strong> has weight 'strong', not a number; allowed: -2 to 2, e.g. 0.8"),
    ("a fox <lora:ink:2.5>", "<lora:ink:2.5> has weight 2.5, out of range; allowed: -2 to 2"),
    ("a fox <lora:ink:-3>", "<lora:ink:-3> has weight -3, out of range; allowed: -2 to 2"),
    ("a fox <lora:ink:inf>", "<lora:ink:inf> has weight inf, out of range; allowed: -2 to 2"),
    ("a fox <lora:ink:nan>", "<lora:ink:nan> has weight nan, out of range; allowed: -2 to 2"),
    ("a fox <lora::0.5>", "<lora::0.5> names no LoRA; allowed: <lora:NAME> or <lora:NAME:WEIGHT>"),
    ("a fox <lora:ink:0.5:0.7>", "<lora:ink:0.5:0.7> has more than one weight; allowed: <lora:NAME> or "
                                 "<lora:NAME:WEIGHT>"),
    ("a fox <lora:ink:0.5", "a <lora: tag is not closed with >; allowed: <lora:NAME> or <lora:NAME:WEIGHT>"),
])
def test_bad_lora_tags_say_what_is_allowed(text: str, problem: str) -> None:
    assert problems_of(text) == [problem]


def test_a_long_bad_lora_tag_is_quoted_short() -> None:
    [problem] = problems_of(f"a fox <lora:{'x' * 300}:huge>")
    assert len(problem) < 200 and "...>" in problem


def test_the_lora_option_adds_to_the_prompt_tags_and_a_typed_weight_stays() -> None:
    flags = parse_prompt_flags("a fox <lora:ink:0.3>")
    assert merge_options(flags, Options(loras=(("fur", None),))).options.loras == (("ink", 0.3), ("fur", None))
    assert merge_options(flags, Options(loras=(("ink", None),))).options.loras == (("ink", 0.3),)
    assert merge_options(flags, Options(seed=2)).options.loras == (("ink", 0.3),)
