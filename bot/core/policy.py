"""The config sections of moderators' policy: content rules, the NSFW policy and the operations endpoint.

``content`` and ``safety`` exist at the top level (every server's defaults) and under ``guilds.<id>``
(that server's overrides: its content rules are added to the defaults' rules; any other key written
there replaces the default). ``observability`` is top-level only. The checks that use them live in the
features; this module only says what a valid setting is.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from generation.configfile import within

SafetyMode = Literal["off", "spoiler", "blur", "refuse"]
RULE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ContentRule(_Strict):
    """Terms a prompt (or negative prompt) may not contain; a match is refused naming only the rule's id."""

    id: str = Field(description="shown to the member when the rule refuses a prompt: 1-32 of a-z, 0-9, _ and -")
    words: list[str] = Field(default_factory=list, description="words or phrases, matched after normalising "
                             "(case, width, accents, zero-width characters, spacing tricks, look-alike letters)")
    patterns: list[str] = Field(default_factory=list, description="regular expressions, matched on the "
                                "normalised text")

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not RULE_ID.fullmatch(value):
            raise ValueError(f"rule id {value!r} is not allowed; allowed: 1 to 32 of a-z, 0-9, _ and -, "
                             "starting with a letter or digit")
        return value

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression ({exc})") from exc
        return value


class ContentConfig(_Strict):
    rules: list[ContentRule] = Field(default_factory=list)
    default_negative: str | None = Field(default=None, description="added to every request's negative prompt")
    max_prompt_chars: Annotated[int, within(1, 2000)] | None = Field(
        default=None, description="longest prompt allowed (null: the bot's own limit, 2000)")


class SafetyConfig(_Strict):
    """What happens to an image the safety checker flags: ``off`` shows it, ``spoiler`` hides it behind
    Discord's spoiler, ``blur`` blurs it and marks it a spoiler, ``refuse`` replaces it with a notice."""

    mode: SafetyMode | None = None
    nsfw_channel_mode: SafetyMode | None = Field(
        default=None, description="the same, in channels Discord marks age-restricted")

    @field_validator("mode", "nsfw_channel_mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML reads an unquoted off as false: take it as the mode it was meant to be.
        return "off" if value is False else value


class ObservabilityConfig(_Strict):
    http_port: Annotated[int, within(1, 65535)] | None = Field(
        default=None, description="serve /metrics, /healthz and /readyz on this port (null: off)")
    http_host: str = "127.0.0.1"
    metrics_top_guilds: Annotated[int, within(1, 1000)] = Field(
        default=20, description="servers named in metric labels; the rest are counted as 'other'")
    log_format: Literal["text", "json"] = "text"
