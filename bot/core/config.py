"""config.yaml as one pydantic model (``AppConfig``), its loader and limit resolution.

Sections: ``models``/``executor``/``loras`` (validated by ``generation.config``), ``limits`` (defaults),
``guilds`` (per-server overrides), ``scheduler``, ``discord`` and ``bot``.

Per-server settings that moderators store with ``/mod`` sit on top of the file (``bot.core.overrides``):
``ConfigStore.current`` (``bot.core.config_store``, the live reload) is the file with them merged in,
``ConfigStore.file`` the file alone.

Limit resolution (``resolve_limits``): defaults ← the guild's ``limits`` ← the user's role overrides.
Only keys written in an override replace the inherited value; writing ``null`` means "no limit".
When several of the user's roles set the same key, the most generous value wins (no limit beats any
number, a larger cap or quota beats a smaller one, a faster bucket beats a slower one), so giving a
member an extra role never takes anything away from them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.core.contest_config import ContestsConfig
from bot.core.policy import ContentConfig, ObservabilityConfig, SafetyConfig
from generation.config import GenerationConfig, generation_config_from_mapping
from generation.configfile import parse_yaml, read_config_text, validate_section, within
from generation.paths import folder_of

GENERATION_KEYS = ("models", "executor", "loras")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Sane ranges for numbers in config.yaml (see generation.configfile.within): nothing infinite, nothing
# that would make a bucket refill never (a ZeroDivisionError) or a retry time overflow.
MONTH_S = 30 * 24 * 3600
Amount = Annotated[float, within(0.001, 1_000_000)]
WindowS = Annotated[float, within(1, MONTH_S, "s", "30 days")]
Weight = Annotated[float, within(0.01, 1000)]
QueueCap = Annotated[int, within(0, 100_000)]
RunningCap = Annotated[int, within(1, 1000)]
DailyImages = Annotated[int, within(0, 1_000_000)]


class Bucket(_Strict):
    """A token bucket: ``amount`` tokens per ``window_s`` seconds, holding at most ``burst`` tokens.

    With ``unit: requests`` each request takes one token; with ``unit: cost`` it takes its cost
    (1.0 = one 512x512 image at 25 steps on a weight-1 model)."""

    unit: Literal["requests", "cost"] = "requests"
    amount: Amount
    window_s: WindowS = 60.0
    burst: Amount | None = Field(default=None, description="bucket size; default: amount")

    @property
    def rate(self) -> float:
        return self.amount / self.window_s

    @property
    def capacity(self) -> float:
        return self.burst if self.burst is not None else self.amount

    def describe(self) -> str:
        unit = "request" if self.unit == "requests" else "cost unit"
        unit += "" if self.amount == 1 else "s"
        return f"{self.amount:g} {unit} per {self.window_s:g} s (burst {self.capacity:g})"


class UserLimits(_Strict):
    """The limits a role override may change: everything that is counted per user."""

    user_rate: Bucket | None = Field(default_factory=lambda: Bucket(amount=6, window_s=60, burst=3))
    max_queued_per_user: QueueCap | None = 3
    max_running_per_user: RunningCap | None = None
    daily_images_per_user: DailyImages | None = 100


class Limits(UserLimits):
    """Every admission limit; ``limits:`` holds the defaults, ``guilds.<id>.limits`` overrides them."""

    guild_rate: Bucket | None = Field(default_factory=lambda: Bucket(unit="cost", amount=240, window_s=600, burst=60))
    max_queued_per_guild: QueueCap | None = 50
    max_running_per_guild: RunningCap | None = None
    quota_reset_hour: Annotated[int, within(0, 23)] = 0
    quota_timezone: str = "UTC"

    @field_validator("quota_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; allowed: IANA names such as UTC or Europe/Berlin") from exc
        return value


class GuildConfig(_Strict):
    """Overrides for one server (``guilds: {"<guild id>": {...}}``)."""

    name: str | None = Field(default=None, description="a note for humans; unused")
    weight: Weight | None = Field(default=None, description="share of the GPU relative to other servers")
    channels: list[int] = Field(default_factory=list, description="allow-list; empty allows every channel")
    moderator_roles: list[int] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    roles: dict[int, UserLimits] = Field(default_factory=dict)
    content: ContentConfig = Field(default_factory=ContentConfig)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    banned_users: list[int] = Field(default_factory=list, description="members refused /imagine and its buttons here")
    contests: ContestsConfig = Field(default_factory=ContestsConfig)


class SchedulerConfig(_Strict):
    batch_window_ms: Annotated[int, within(0, 5000, "ms")] = 30
    lookahead: Annotated[int, within(0, 64)] = 8
    eta_smoothing: Annotated[float, within(0.01, 1)] = 0.2
    initial_seconds_per_cost: Annotated[float, within(0.001, 3600, "s")] = 2.0
    default_guild_weight: Weight = 1.0
    max_queued: QueueCap | None = 200
    max_running: RunningCap | None = None
    concurrency: Annotated[int, within(1, 64)] = 1
    max_wait_s: Annotated[float, within(1, 86_400, "s", "a day")] = 840.0
    position_update_s: Annotated[float, within(0, 600, "s")] = 2.0
    reload_poll_s: Annotated[float, within(0.05, 3600, "s")] = 5.0


MAX_SHARDS = 10_000  # 25 million servers at Discord's 2,500 per shard: far past what one process serves
SHARDS_ALLOWED = (f"allowed: none (one gateway connection, the default), auto (as many shards as Discord "
                  f"recommends) or a number of shards from 1 to {MAX_SHARDS}")


def _shard_setting(value: Any) -> int | Literal["auto"] | None:
    """``discord.shards`` as written: null or ``none``, ``auto``, or a whole number of shards."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    # bool is an int in Python; ``shards: true`` says nothing about how many shards.
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SHARDS:
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number; {SHARDS_ALLOWED}")
    raise ValueError(f"{value!r} is not a shard setting; {SHARDS_ALLOWED}")


class DiscordConfig(BaseModel):
    """Connection settings; other keys are kept for the bot (permissive on purpose)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    shards: int | Literal["auto"] | None = Field(
        default=None, description="none: one gateway connection; auto: Discord's recommended shard count "
        "(GET /gateway/bot); a number: that many shards, all in this process (discord.py's AutoShardedClient); "
        "read at start-up")
    api_base: str | None = None
    gateway_url: str | None = None
    dev_guilds: list[int] = Field(default_factory=list)
    exit_on_connect_failure: bool = Field(default=False, description="exit 3 instead of retrying at start-up")
    connect_retry_s: Annotated[float, within(0.1, 300, "s")] = Field(
        default=5.0, description="first wait before trying Discord again at start-up; doubles each time")
    connect_retry_max_s: Annotated[float, within(1, 3600, "s")] = Field(
        default=300.0, description="longest wait between tries")

    @model_validator(mode="before")
    @classmethod
    def _no_shard_count(cls, data: Any) -> Any:
        # discord.py calls it shard_count; kept as an unknown key it would silently run one shard.
        if isinstance(data, Mapping) and "shard_count" in data:
            raise ValueError(f"shard_count is not a setting; use shards: {SHARDS_ALLOWED.removeprefix('allowed: ')}")
        return data

    @field_validator("shards", mode="before")
    @classmethod
    def _shards(cls, value: Any) -> int | Literal["auto"] | None:
        return _shard_setting(value)


def _default_aspects() -> dict[str, str]:
    return {"1:1": "512x512", "3:2": "768x512", "2:3": "512x768", "16:9": "912x512", "9:16": "512x912"}


class BotConfig(BaseModel):
    """Presentation settings for the cogs; other keys are kept for the bot (permissive on purpose)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    aspects: dict[str, str] = Field(default_factory=_default_aspects)
    styles: dict[str, str] = Field(default_factory=lambda: {"photo": "a photograph of {prompt}, natural light"})
    database_url: str | None = None
    allow_dms: bool = Field(default=False, description="whether /imagine works in direct messages")
    progress_interval_s: Annotated[float, within(0, 600, "s")] = Field(
        default=2.0, description="least seconds between progress edits")
    standby: bool = Field(default=False, description="run as one of several bot processes: the one holding a "
                          "lease in Redis (executor.redis_url) is active, the others wait to take over")
    standby_lease_s: Annotated[float, within(1, 300, "s")] = Field(
        default=5.0, description="how long the active process's lease lasts unless renewed")

    @field_validator("aspects")
    @classmethod
    def _sizes(cls, value: dict[str, str]) -> dict[str, str]:
        for name, size in value.items():
            if not re.fullmatch(r"\d{2,4}x\d{2,4}", size):
                raise ValueError(f"aspect {name!r} has size {size!r}; allowed: WIDTHxHEIGHT such as 768x512")
        return value

    @field_validator("styles")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        for name, template in value.items():
            if "{prompt}" not in template:
                raise ValueError(f"style {name!r} lacks {{prompt}}; allowed: a template containing {{prompt}}")
        return value


class RetentionConfig(_Strict):
    """How long stored data is kept (``retention:``); a periodic purge removes what is older."""

    images_days: float | None = Field(default=30, gt=0, description="result PNGs and input images; null: forever")
    # Daily quotas are counted again from job records at start-up: a record must outlive the longest quota day.
    jobs_days: Annotated[float, within(2, 36_500, "days", "quotas are counted from them")] | None = Field(
        default=365, description="job records, kept without images (at least 2 days); null: forever")
    interaction_token_minutes: float = Field(default=15, ge=15, le=60, description="Discord interaction tokens")
    purge_interval_s: float = Field(default=3600, ge=60, description="how often the purge runs")


class _FileSections(_Strict):
    limits: Limits = Field(default_factory=Limits)
    guilds: dict[int, GuildConfig] = Field(default_factory=dict)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    discord: DiscordConfig = Field(default_factory=DiscordConfig)
    bot: BotConfig = Field(default_factory=BotConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    content: ContentConfig = Field(default_factory=ContentConfig)
    safety: SafetyConfig = Field(default_factory=lambda: SafetyConfig(mode="blur", nsfw_channel_mode="off"))
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    contests: ContestsConfig = Field(default_factory=ContestsConfig)


class AppConfig(_FileSections):
    """The whole of config.yaml."""

    generation: GenerationConfig = Field(default_factory=GenerationConfig)

    def guild_weight(self, guild_id: int) -> float:
        guild = self.guilds.get(guild_id)
        return guild.weight if guild is not None and guild.weight is not None else self.scheduler.default_guild_weight

    def is_moderator(self, guild_id: int, role_ids: Iterable[int]) -> bool:
        guild = self.guilds.get(guild_id)
        return guild is not None and not set(guild.moderator_roles).isdisjoint(role_ids)


def parse_config(text: str, source: str = "config.yaml") -> AppConfig:
    """Validate config text; raise ConfigError naming the key, its line and what is allowed."""
    data, lines = parse_yaml(text, source)
    generation = generation_config_from_mapping(data, source, lines)
    rest = {key: value for key, value in data.items() if key not in GENERATION_KEYS}
    sections = validate_section(_FileSections, rest, source, lines)
    return AppConfig(generation=generation, **{name: getattr(sections, name) for name in _FileSections.model_fields})


def load_config(path: Path | str) -> AppConfig:
    """Read and validate a config file. Relative paths in it (model and LoRA files, ``models.cache_dir``, a
    SQLite ``bot.database_url``) are relative to the file's folder, wherever the bot is started from."""
    path = Path(path)
    return anchored(parse_config(read_config_text(path), str(path)), folder_of(path))


# sqlite:///relative/file.db has a relative path; sqlite:////abs/file.db and sqlite:///:memory: do not.
_SQLITE_RELATIVE = re.compile(r"^(sqlite(?:\+\w+)?:///)(?!/|:memory:)([^?]+)(\?.*)?$")


def anchored(config: AppConfig, base: Path) -> AppConfig:
    """``config`` with its relative paths made relative to ``base`` (see ``load_config``)."""
    update: dict[str, Any] = {"generation": config.generation.anchored(base)}
    url = config.bot.database_url
    match = _SQLITE_RELATIVE.match(url) if url else None
    if match is not None:
        prefix, path, query = match.groups()
        bot = config.bot.model_copy(update={"database_url": f"{prefix}{base / path}{query or ''}"})
        update["bot"] = bot
    return config.model_copy(update=update)


def _generosity(value: Any) -> tuple[float, float]:
    if value is None:
        return (float("inf"), float("inf"))
    if isinstance(value, Bucket):
        return (value.rate, value.capacity)
    return (float(value), 0.0)


def resolve_limits(config: AppConfig, guild_id: int, role_ids: Iterable[int] = ()) -> Limits:
    """The limits for a member: defaults ← guild override ← role overrides (most generous role wins)."""
    limits = config.limits
    guild = config.guilds.get(guild_id)
    if guild is None:
        return limits
    update = {name: getattr(guild.limits, name) for name in guild.limits.model_fields_set}
    overrides = [guild.roles[role] for role in role_ids if role in guild.roles]
    for name in UserLimits.model_fields:
        values = [getattr(override, name) for override in overrides if name in override.model_fields_set]
        if values:
            update[name] = max(values, key=_generosity)
    return limits.model_copy(update=update) if update else limits
