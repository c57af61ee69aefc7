"""config.yaml as one pydantic model (``AppConfig``), its loader, limit resolution and live reload.

Sections: ``models``/``executor`` (validated by ``generation.config``), ``limits`` (defaults),
``guilds`` (per-server overrides), ``scheduler``, ``discord`` and ``bot``.

Limit resolution (``resolve_limits``): defaults ← the guild's ``limits`` ← the user's role overrides.
Only keys written in an override replace the inherited value; writing ``null`` means "no limit".
When several of the user's roles set the same key, the most generous value wins (no limit beats any
number, a larger cap or quota beats a smaller one, a faster bucket beats a slower one), so giving a
member an extra role never takes anything away from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from generation.config import GenerationConfig, generation_config_from_mapping
from generation.configfile import parse_yaml, read_config_text, validate_section
from generation.errors import ConfigError

_log = logging.getLogger(__name__)
GENERATION_KEYS = ("models", "executor")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Bucket(_Strict):
    """A token bucket: ``amount`` tokens per ``window_s`` seconds, holding at most ``burst`` tokens.

    With ``unit: requests`` each request takes one token; with ``unit: cost`` it takes its cost
    (1.0 = one 512x512 image at 25 steps on a weight-1 model)."""

    unit: Literal["requests", "cost"] = "requests"
    amount: float = Field(gt=0)
    window_s: float = Field(default=60.0, gt=0)
    burst: float | None = Field(default=None, gt=0, description="bucket size; default: amount")

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
    max_queued_per_user: int | None = Field(default=3, ge=0)
    max_running_per_user: int | None = Field(default=None, ge=1)
    daily_images_per_user: int | None = Field(default=100, ge=0)


class Limits(UserLimits):
    """Every admission limit; ``limits:`` holds the defaults, ``guilds.<id>.limits`` overrides them."""

    guild_rate: Bucket | None = Field(default_factory=lambda: Bucket(unit="cost", amount=240, window_s=600, burst=60))
    max_queued_per_guild: int | None = Field(default=50, ge=0)
    max_running_per_guild: int | None = Field(default=None, ge=1)
    quota_reset_hour: int = Field(default=0, ge=0, le=23)
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
    weight: float | None = Field(default=None, gt=0, description="share of the GPU relative to other servers")
    channels: list[int] = Field(default_factory=list, description="allow-list; empty allows every channel")
    moderator_roles: list[int] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    roles: dict[int, UserLimits] = Field(default_factory=dict)


class SchedulerConfig(_Strict):
    batch_window_ms: int = Field(default=30, ge=0, le=5000)
    lookahead: int = Field(default=8, ge=0, le=64)
    eta_smoothing: float = Field(default=0.2, gt=0, le=1)
    initial_seconds_per_cost: float = Field(default=2.0, gt=0)
    default_guild_weight: float = Field(default=1.0, gt=0)
    max_queued: int | None = Field(default=200, ge=0)
    max_running: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=1, ge=1, le=64)
    max_wait_s: float = Field(default=840.0, gt=0)
    position_update_s: float = Field(default=2.0, ge=0)
    reload_poll_s: float = Field(default=5.0, gt=0)


class DiscordConfig(BaseModel):
    """Connection settings; other keys are kept for the bot (permissive on purpose)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    api_base: str | None = None
    gateway_url: str | None = None
    dev_guilds: list[int] = Field(default_factory=list)


def _default_aspects() -> dict[str, str]:
    return {"1:1": "512x512", "3:2": "768x512", "2:3": "512x768", "16:9": "912x512", "9:16": "512x912"}


class BotConfig(BaseModel):
    """Presentation settings for the cogs; other keys are kept for the bot (permissive on purpose)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    aspects: dict[str, str] = Field(default_factory=_default_aspects)
    styles: dict[str, str] = Field(default_factory=lambda: {"photo": "a photograph of {prompt}, natural light"})
    database_url: str | None = None
    progress_interval_s: float = Field(default=2.0, ge=0, description="least seconds between progress edits")

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
    jobs_days: float | None = Field(default=365, gt=0, description="job records, kept without images; null: forever")
    interaction_token_minutes: float = Field(default=15, ge=15, le=60, description="Discord interaction tokens")
    purge_interval_s: float = Field(default=3600, ge=60, description="how often the purge runs")


class _FileSections(_Strict):
    limits: Limits = Field(default_factory=Limits)
    guilds: dict[int, GuildConfig] = Field(default_factory=dict)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    discord: DiscordConfig = Field(default_factory=DiscordConfig)
    bot: BotConfig = Field(default_factory=BotConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)


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
    path = Path(path)
    return parse_config(read_config_text(path), str(path))


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


class ConfigStore:
    """Holds the running AppConfig; ``reload()`` swaps in a valid file and keeps the old one otherwise."""

    def __init__(self, path: Path | str | None = None, *, initial: AppConfig | None = None,
                 model_override: str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._stamp = self._file_stamp()
        # IMAGINE_MODEL: applied after every load so that a reload does not undo it.
        self._model_override = model_override
        if initial is None:
            initial = load_config(self.path) if self.path is not None else AppConfig()
        self._current = self._adjust(initial)
        self._listeners: list[Callable[[AppConfig], None]] = []
        self._rejection_listeners: list[Callable[[str], None]] = []
        self.last_error: str | None = None

    @property
    def current(self) -> AppConfig:
        return self._current

    def subscribe(self, callback: Callable[[AppConfig], None], *,
                  on_rejected: Callable[[str], None] | None = None) -> None:
        """``callback(new_config)`` runs after each successful reload or replace; ``on_rejected(reason)``
        after a reload that was refused (the running config stays)."""
        self._listeners.append(callback)
        if on_rejected is not None:
            self._rejection_listeners.append(on_rejected)

    def _adjust(self, config: AppConfig) -> AppConfig:
        if self._model_override is None:
            return config
        generation = config.generation.with_default_model(self._model_override)
        return config.model_copy(update={"generation": generation})

    def replace(self, config: AppConfig) -> None:
        self._current = config
        for callback in self._listeners:
            try:
                callback(config)
            except Exception:
                _log.exception("config listener failed")

    def reload(self) -> AppConfig:
        """Load the file again. Raises ConfigError (with key and line) and keeps the running config."""
        if self.path is None:
            raise ConfigError("no config file to reload; start the bot with --config PATH")
        self._stamp = self._file_stamp()
        try:
            config = self._adjust(load_config(self.path))
        except ConfigError as exc:
            self.last_error = str(exc)
            for callback in self._rejection_listeners:
                try:
                    callback(self.last_error)
                except Exception:
                    _log.exception("config rejection listener failed")
            raise
        self.last_error = None
        self.replace(config)
        _log.info("reloaded %s", self.path)
        return config

    def reload_logged(self) -> bool:
        """Reload for callers that cannot handle errors (signal handlers, the watcher): log instead."""
        try:
            self.reload()
        except ConfigError as exc:
            _log.error("config not reloaded, the running config stays: %s", exc)
            return False
        except Exception:  # the watcher must survive anything a half-written file can cause
            _log.exception("config not reloaded, the running config stays")
            return False
        return True

    def _file_stamp(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def changed_on_disk(self) -> bool:
        return self._file_stamp() != self._stamp

    async def watch(self, sleep: Callable[[float], Awaitable[None]], interval_s: float | None = None) -> None:
        """Poll the file's mtime and reload on change, forever; run it as a task and cancel it to stop."""
        while True:
            await sleep(interval_s if interval_s is not None else self._current.scheduler.reload_poll_s)
            if self.path is not None and self.changed_on_disk():
                self.reload_logged()

    def install_sighup(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Reload on SIGHUP (POSIX only). Returns whether the handler was installed."""
        sighup = getattr(signal, "SIGHUP", None)
        if sighup is None:
            return False
        try:
            loop.add_signal_handler(sighup, self.reload_logged)
        except (NotImplementedError, RuntimeError, ValueError):
            return False
        return True

    def uninstall_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        sighup = getattr(signal, "SIGHUP", None)
        if sighup is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sighup)
