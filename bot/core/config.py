"""config.yaml as one pydantic model (``AppConfig``), its loader, limit resolution and live reload.

Sections: ``models``/``executor``/``loras`` (validated by ``generation.config``), ``limits`` (defaults),
``guilds`` (per-server overrides), ``scheduler``, ``discord`` and ``bot``.

Per-server settings that moderators store with ``/mod`` sit on top of the file (``bot.core.overrides``):
``ConfigStore.current`` is the file with them merged in, ``ConfigStore.file`` the file alone.

Limit resolution (``resolve_limits``): defaults ← the guild's ``limits`` ← the user's role overrides.
Only keys written in an override replace the inherited value; writing ``null`` means "no limit".
When several of the user's roles set the same key, the most generous value wins (no limit beats any
number, a larger cap or quota beats a smaller one, a faster bucket beats a slower one), so giving a
member an extra role never takes anything away from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import re
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.core.contest_config import ContestsConfig
from bot.core.overrides import Overrides, file_entry, merge, validate_guild
from bot.core.policy import ContentConfig, ObservabilityConfig, SafetyConfig
from generation.config import GenerationConfig, generation_config_from_mapping
from generation.configfile import parse_yaml, read_config_text, validate_section, within
from generation.errors import ConfigError
from generation.paths import folder_of

_log = logging.getLogger(__name__)
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
        self._file = self._adjust(initial)
        self._current = self._file
        # Servers' stored settings (/mod), merged onto every file that is loaded; see bot.core.overrides.
        self._overrides: dict[int, Overrides] = {}
        self.skipped_overrides: dict[int, str] = {}  # server -> why its stored settings do not apply now
        self._listeners: list[Callable[[AppConfig], None]] = []
        self._rejection_listeners: list[Callable[[str], None]] = []
        self.last_error: str | None = None
        self._reloading = asyncio.Lock()
        self._pending: set[asyncio.Task[bool]] = set()

    @property
    def current(self) -> AppConfig:
        """The running config: the file with every server's stored settings merged in."""
        return self._current

    @property
    def file(self) -> AppConfig:
        """The file alone: the defaults that the servers' stored settings sit on."""
        return self._file

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

    # --- servers' stored settings -----------------------------------------------------------------
    def overrides(self, guild_id: int) -> Overrides:
        """A copy of the settings stored for ``guild_id`` (empty when none)."""
        return copy.deepcopy(self._overrides.get(guild_id, {}))

    def check_overrides(self, guild_id: int, overrides: Mapping[str, Any], *, source: str = "/mod") -> GuildConfig:
        """The server's config with ``overrides`` on the file's entry, validated as the file is; raises
        ConfigError with the file's message (``source`` in place of the file's name). Changes nothing."""
        merged = merge(file_entry(self._file.guilds.get(guild_id)), overrides)
        checked: GuildConfig = validate_guild(GuildConfig, guild_id, merged, source)
        return checked

    def set_overrides(self, guild_id: int, overrides: Mapping[str, Any], *, source: str = "/mod",
                      check: bool = True) -> AppConfig:
        """Store ``overrides`` as the server's settings (they replace its previous ones) and run the merged
        config from now on; subscribers hear of it as of a reload. Raises ConfigError and changes nothing
        when the result does not validate; with ``check=False`` (settings already stored, checked before a
        reload came in between) they are kept but skipped, and logged, as at start-up."""
        if check:
            self.check_overrides(guild_id, overrides, source=source)
        if overrides:
            self._overrides[guild_id] = copy.deepcopy(dict(overrides))
        else:
            self._overrides.pop(guild_id, None)
        self._publish(self._merged(self._file))
        return self._current

    def load_overrides(self, stored: Mapping[int, Mapping[str, Any]]) -> None:
        """Every server's stored settings at start-up (before any feature reads the config). One that does not
        validate on today's file is logged and skipped, never fatal: the bot runs with the file's values."""
        self._overrides = {guild_id: copy.deepcopy(dict(values)) for guild_id, values in stored.items() if values}
        self._publish(self._merged(self._file))

    def _merged(self, file: AppConfig) -> AppConfig:
        guilds = dict(file.guilds)
        skipped: dict[int, str] = {}
        for guild_id, overrides in self._overrides.items():
            try:
                guilds[guild_id] = validate_guild(GuildConfig, guild_id,
                                                  merge(file_entry(file.guilds.get(guild_id)), overrides),
                                                  f"stored /mod settings of server {guild_id}")
            except ConfigError as exc:
                skipped[guild_id] = str(exc)
                if self.skipped_overrides.get(guild_id) != str(exc):  # once per problem, not on every change
                    _log.error("%s; they are skipped until they fit again (config.yaml's values apply)", exc)
        self.skipped_overrides = skipped
        return file.model_copy(update={"guilds": guilds}) if self._overrides else file

    def replace(self, config: AppConfig) -> None:
        """Run ``config`` as the file's config (a reload); the servers' stored settings apply on top of it."""
        self._file = config
        self._publish(self._merged(config))

    def _publish(self, config: AppConfig) -> None:
        self._current = config
        for callback in self._listeners:
            try:
                callback(config)
            except Exception:
                _log.exception("config listener failed")

    def _load(self) -> AppConfig:
        """Read and validate the file; touches no state, so it may run on a worker thread."""
        assert self.path is not None
        return self._adjust(load_config(self.path))

    def _no_file(self) -> ConfigError:
        return ConfigError("no config file to reload; start the bot with --config PATH")

    def _rejected(self, exc: ConfigError) -> None:
        self.last_error = str(exc)
        for callback in self._rejection_listeners:
            try:
                callback(self.last_error)
            except Exception:
                _log.exception("config rejection listener failed")

    def _accepted(self, config: AppConfig) -> AppConfig:
        self.last_error = None
        self.replace(config)
        _log.info("reloaded %s", self.path)
        return config

    def reload(self) -> AppConfig:
        """Load the file again. Raises ConfigError (with key and line) and keeps the running config.

        Synchronous: it reads and parses on the caller's thread. The event loop uses ``reload_async``."""
        if self.path is None:
            raise self._no_file()
        self._stamp = self._file_stamp()
        try:
            config = self._load()
        except ConfigError as exc:
            self._rejected(exc)
            raise
        return self._accepted(config)

    async def reload_async(self) -> AppConfig:
        """``reload`` for the event loop: the file is read and parsed on a worker thread (a slow disk or a
        large file never stalls Discord's heartbeat), then swapped in on the loop, one reload at a time."""
        if self.path is None:
            raise self._no_file()
        async with self._reloading:
            self._stamp = self._file_stamp()
            try:
                config = await asyncio.to_thread(self._load)
            except ConfigError as exc:
                self._rejected(exc)
                raise
            return self._accepted(config)

    def reload_logged(self) -> bool:
        """Reload for callers that cannot handle errors: log instead."""
        try:
            self.reload()
        except Exception as exc:
            return self._log_failure(exc)
        return True

    async def reload_logged_async(self) -> bool:
        """``reload_async`` for the watcher and SIGHUP: log instead of raising."""
        try:
            await self.reload_async()
        except Exception as exc:
            return self._log_failure(exc)
        return True

    @staticmethod
    def _log_failure(exc: Exception) -> bool:
        if isinstance(exc, ConfigError):
            _log.error("config not reloaded, the running config stays: %s", exc)
        else:  # the watcher must survive anything a half-written file can cause
            _log.error("config not reloaded, the running config stays", exc_info=exc)
        return False

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
                await self.reload_logged_async()

    def install_sighup(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Reload on SIGHUP (POSIX only). Returns whether the handler was installed."""
        sighup = getattr(signal, "SIGHUP", None)
        if sighup is None:
            return False
        try:
            loop.add_signal_handler(sighup, self._reload_soon)
        except (NotImplementedError, RuntimeError, ValueError):
            return False
        return True

    def _reload_soon(self) -> None:
        """The SIGHUP handler: start an off-loop reload and return at once."""
        task = asyncio.ensure_future(self.reload_logged_async())
        self._pending.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(self._pending.discard)

    def uninstall_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        sighup = getattr(signal, "SIGHUP", None)
        if sighup is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sighup)
