"""Midjourney-style flags typed into a prompt (``a cat --ar 16:9 --seed 42 --no text``).

Flags are parsed out of the prompt and returned as typed values; slash-command options given
explicitly win over flags (``merge_options``). Errors are ``InvalidRequest`` whose problems name
the flag, the bad value and what is allowed. Checks that depend on the model (maximum steps,
pixel budget) are left to ``generation.request.validate``.

Grammar: a flag is ``--name`` (or ``—name``/``–name``: phones turn ``--`` into a dash) at the start
of the text or after whitespace. Single-value flags take the next word and leave any further words
in the prompt; ``--no`` takes every word up to the next flag (Midjourney puts flags last).
LoRAs use A1111's syntax anywhere in the text: ``<lora:NAME>`` (its default weight) or
``<lora:NAME:WEIGHT>``; tags are taken out before flags are read, so the model never sees them.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, cast

from generation.config import LORA_WEIGHT_LIMIT
from generation.errors import InvalidRequest
from generation.request import MAX_IMAGES_PER_REQUEST, MAX_SEED

_log = logging.getLogger(__name__)

# "--", em dash or en dash, then a letter: "a cat — with a hat" and "cat—dog" stay prompt text.
_FLAG = re.compile(r"(?:(?<=\s)|^)(?:--|—|–)([A-Za-z][A-Za-z0-9_-]*)")
_RATIO = re.compile(r"^(\d{1,4}):(\d{1,4})$")
_SIZE = re.compile(r"^(\d{1,5})[xX×](\d{1,5})$")
MAX_ASPECT_RATIO = 4.0  # arbitrary W:H are computed between 1:4 and 4:1
_LORA_TAG = re.compile(r"<\s*lora\s*:([^<>]*)>", re.IGNORECASE)
_LORA_OPEN = re.compile(r"<\s*lora\s*:", re.IGNORECASE)  # what is left of a tag without its ">"
_LORA_SYNTAX = "allowed: <lora:NAME> or <lora:NAME:WEIGHT>"
LoraAsked = tuple[str, float | None]  # (name, weight); None: the LoRA's default_weight

# Canonical option name for each accepted spelling.
_ALIASES: dict[str, str] = {
    "ar": "aspect", "aspect": "aspect", "seed": "seed", "no": "negative",
    "steps": "steps", "count": "count", "n": "count", "guidance": "guidance", "cfg": "guidance",
    "model": "model", "style": "style", "strength": "strength", "size": "size",
}
KNOWN_FLAGS = tuple(f"--{name}" for name in _ALIASES)
# Flags users bring from Midjourney that would otherwise be silently misread.
_EXAMPLES = {
    "aspect": "--ar 16:9", "seed": "--seed 42", "negative": "--no text, watermark", "steps": "--steps 30",
    "count": "--count 2", "guidance": "--guidance 7", "model": "--model NAME", "style": "--style NAME",
    "strength": "--strength 0.6", "size": "--size 768x512",
}
_HINTS = {
    "s": "Midjourney's --s (stylize) is not supported; for steps use --steps",
    "stylize": "Midjourney's --stylize is not supported",
    "iw": "--iw is not supported; attach an image and use --strength 0.05 to 1",
    # Midjourney's --sameseed gives every image of a grid the same starting noise. Here image i always has seed
    # N+i (each one reproducible alone), so it could only ever act as --seed: refused, rather than misleading.
    "sameseed": "every image here has its own seed (N, N+1, …); use --seed N",
}


@dataclass(frozen=True)
class Options:
    """Generation options from flags or slash-command options; ``None`` means "not given"."""

    negative: str | None = None
    aspect: str | None = None  # normalised "W:H"
    size: tuple[int, int] | None = None  # (width, height)
    seed: int | None = None
    steps: int | None = None
    count: int | None = None
    guidance: float | None = None
    model: str | None = None
    style: str | None = None
    strength: float | None = None
    loras: tuple[LoraAsked, ...] = ()  # in the order given


@dataclass(frozen=True)
class ParsedFlags:
    """The prompt with its flags removed, and the flags' values."""

    prompt: str
    options: Options


def _parse_int(flag: str, text: str, low: int, high: int | None, allowed: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{flag} {text} is not a whole number; allowed: {allowed}") from None
    if value < low or (high is not None and value > high):
        raise ValueError(f"{flag} {text} is out of range; allowed: {allowed}")
    return value


def _parse_float(flag: str, text: str, low: float, high: float | None, allowed: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{flag} {text} is not a number; allowed: {allowed}") from None
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        raise ValueError(f"{flag} {text} is out of range; allowed: {allowed}")
    return value


def _parse_aspect(flag: str, text: str) -> str:
    match = _RATIO.match(text)
    if not match or int(match[1]) == 0 or int(match[2]) == 0:
        raise ValueError(f"{flag} {text} is not an aspect ratio; allowed: W:H with whole numbers, e.g. 16:9")
    return f"{int(match[1])}:{int(match[2])}"


def _parse_size(flag: str, text: str) -> tuple[int, int]:
    match = _SIZE.match(text)
    if not match or int(match[1]) == 0 or int(match[2]) == 0:
        raise ValueError(f"{flag} {text} is not a size; allowed: WIDTHxHEIGHT in pixels, e.g. 768x512")
    return int(match[1]), int(match[2])


def _convert(name: str, flag: str, text: str) -> object:
    """The typed value of one flag; ValueError with a user-facing sentence when it is bad."""
    converters: dict[str, Callable[[], object]] = {
        "seed": lambda: _parse_int(flag, text, 0, MAX_SEED, f"0 to {MAX_SEED}"),
        "steps": lambda: _parse_int(flag, text, 1, None, "whole numbers from 1 (the model sets the maximum)"),
        "count": lambda: _parse_int(flag, text, 1, MAX_IMAGES_PER_REQUEST, f"1 to {MAX_IMAGES_PER_REQUEST}"),
        "guidance": lambda: _parse_float(flag, text, 0.0, None, "numbers from 0 (the model sets the maximum)"),
        "strength": lambda: _parse_float(flag, text, 0.05, 1.0, "0.05 to 1"),
        "aspect": lambda: _parse_aspect(flag, text),
        "size": lambda: _parse_size(flag, text),
    }
    return converters[name]() if name in converters else text


def _lora_weight(tag: str, text: str) -> float:
    limit = f"{-LORA_WEIGHT_LIMIT:g} to {LORA_WEIGHT_LIMIT:g}"
    try:
        weight = float(text)
    except ValueError:
        raise ValueError(f"{tag} has weight {text!r}, not a number; allowed: {limit}, e.g. 0.8") from None
    if not (math.isfinite(weight) and abs(weight) <= LORA_WEIGHT_LIMIT):
        raise ValueError(f"{tag} has weight {text}, out of range; allowed: {limit}")
    return weight


def read_lora_tags(text: str) -> tuple[str, tuple[LoraAsked, ...], list[str]]:
    """The text without its ``<lora:...>`` tags, the LoRAs they ask for, and one sentence per bad tag."""
    loras: list[LoraAsked] = []
    problems: list[str] = []

    def take(match: re.Match[str]) -> str:
        tag = match[0] if len(match[0]) <= 80 else f"{match[0][:77]}...>"
        parts = [part.strip() for part in match[1].split(":")]
        try:
            if not parts[0]:
                raise ValueError(f"{tag} names no LoRA; {_LORA_SYNTAX}")
            if len(parts) > 2:
                raise ValueError(f"{tag} has more than one weight; {_LORA_SYNTAX}")
            loras.append((parts[0], _lora_weight(tag, parts[1]) if len(parts) == 2 and parts[1] else None))
        except ValueError as exc:
            problems.append(str(exc))
        return " "

    text = _LORA_TAG.sub(take, text)
    if _LORA_OPEN.search(text):
        problems.append(f"a <lora: tag is not closed with >; {_LORA_SYNTAX}")
    return text, tuple(loras), problems


def parse_prompt_flags(text: str) -> ParsedFlags:
    """Split ``text`` into the prompt and its flags; raise ``InvalidRequest`` listing every bad flag."""
    parsed, problems = read_prompt_flags(text)
    if problems:
        raise InvalidRequest(problems)
    return parsed


def read_prompt_flags(text: str) -> tuple[ParsedFlags, list[str]]:
    """The prompt and its good flags, and one sentence per bad flag: so that a caller can check the
    good ones further and report every problem in one reply."""
    text, loras, problems = read_lora_tags(text)
    matches = list(_FLAG.finditer(text))
    prompt_parts = [text[: matches[0].start()] if matches else text]
    values: dict[str, object] = {"loras": loras} if loras else {}
    negatives: list[str] = []
    for position, match in enumerate(matches):
        end = matches[position + 1].start() if position + 1 < len(matches) else len(text)
        words = text[match.end() : end].split()
        given = match[1].lower()
        flag = f"--{given}"
        name = _ALIASES.get(given)
        if name is None:
            hint = f"; {_HINTS[given]}" if given in _HINTS else ""
            problems.append(f"{flag} is not a known flag{hint}; known flags: {', '.join(KNOWN_FLAGS)}")
            prompt_parts.append(" ".join(words[1:]))  # keep the prose after the unknown value
            continue
        if not words:
            problems.append(f"{flag} needs a value, e.g. {_EXAMPLES[name]}")
            continue
        if name == "negative":
            negatives.append(" ".join(words))
            continue
        prompt_parts.append(" ".join(words[1:]))
        try:
            value = _convert(name, flag, words[0])
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if name in values and values[name] != value:
            problems.append(f"{flag} is given twice ({values[name]!r} and {value!r}); allowed: once")
        else:
            values[name] = value
    if "aspect" in values and "size" in values:
        problems.append("--ar and --size both set the shape; allowed: one of them")
        del values["size"]  # check the aspect further; the reply already says to pick one
    if negatives:
        values["negative"] = ", ".join(negatives)
    prompt = " ".join(" ".join(part.split()) for part in prompt_parts if part.strip())
    return ParsedFlags(prompt=prompt, options=Options(**cast(dict[str, Any], values))), problems


def merge_options(flags: ParsedFlags, explicit: Options) -> ParsedFlags:
    """Flags overlaid by explicit slash-command options: each explicit (non-None) value wins.

    The shape is one choice: an explicit aspect or size drops both shape flags. Explicit LoRAs are added
    to those typed in the prompt; a LoRA named in both keeps the prompt's weight (the option has none).
    """
    merged = flags.options
    if explicit.aspect is not None or explicit.size is not None:
        merged = replace(merged, aspect=None, size=None)
    typed = {name for name, _ in merged.loras}
    merged = replace(merged, loras=merged.loras + tuple(lora for lora in explicit.loras if lora[0] not in typed))
    overrides = {f.name: getattr(explicit, f.name) for f in fields(Options)
                 if f.name != "loras" and getattr(explicit, f.name) is not None}
    return ParsedFlags(prompt=flags.prompt, options=replace(merged, **overrides))


MIN_SIDE = 64


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def aspect_to_size(
    aspect: str,
    base_pixels: int,
    multiple: int,
    *,
    configured: Mapping[str, str] | None = None,
    allow_arbitrary: bool = True,
) -> tuple[int, int]:
    """(width, height) for ``aspect`` ("16:9").

    A configured aspect maps straight to its "WxH" size. Any other W:H within 1:4..4:1 (when
    ``allow_arbitrary``) gets about ``base_pixels`` pixels, each side a multiple of ``multiple``.
    """
    configured = configured or {}
    match = _RATIO.match(aspect.strip())
    if match and int(match[1]) and int(match[2]):
        normalised = f"{int(match[1])}:{int(match[2])}"
        if normalised in configured:
            size = _SIZE.match(configured[normalised].strip())
            if size is None:
                raise InvalidRequest([f"aspect {normalised} is configured as {configured[normalised]!r}; allowed: WxH"])
            return int(size[1]), int(size[2])
        ratio = int(match[1]) / int(match[2])
        if allow_arbitrary and 1 / MAX_ASPECT_RATIO <= ratio <= MAX_ASPECT_RATIO:
            height = math.sqrt(base_pixels / ratio)
            # Small models have small pixel budgets; keep the short side at the 64 px every model accepts.
            height *= max(1.0, MIN_SIDE / min(height, height * ratio))
            return _round_to(height * ratio, multiple), _round_to(height, multiple)
    allowed = ", ".join(configured)
    if allow_arbitrary:
        allowed = f"{allowed}, or any W:H from 1:4 to 4:1" if allowed else "any W:H from 1:4 to 4:1"
    raise InvalidRequest([f"aspect {aspect} is not allowed; allowed: {allowed or '(none configured)'}"])
