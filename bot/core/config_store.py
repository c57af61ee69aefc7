"""The running configuration: ``ConfigStore`` holds the file's ``AppConfig`` with the moderators' ``/mod``
overrides merged in (``current``), reloads it live (file watcher, SIGHUP, ``/mod reload``) and tells
subscribers; an invalid file is refused with one line and the running config is kept."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from bot.core.config import AppConfig, GuildConfig, load_config
from bot.core.overrides import Overrides, file_entry, merge, validate_guild
from generation.errors import ConfigError

_log = logging.getLogger("bot.core.config")


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
