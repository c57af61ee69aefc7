"""The moderation feature's rules, free of Discord: who may moderate, what each ``/mod`` command changes,
how it is stored and audited.

Every call names the server it acts on only through ``actor.requester.guild_id`` (the interaction's own
server): a moderator of one server can never reach another's settings, queue or jobs. Settings changes
are validated by the config's rules (``ConfigStore.check_overrides``) before anything is stored, stored
with their audit entry in one transaction, then run (``ConfigStore.set_overrides``): the next request sees
them. One change at a time, so that two moderators never edit from the same stale copy.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.core.config import AppConfig, resolve_limits
from bot.core.config_store import ConfigStore
from bot.core.errors import InvalidSetting, JobNotFound, NotPermitted
from bot.core.identity import Requester
from bot.core.overrides import Overrides
from bot.core.policy import ContentRule
from bot.features.moderation import settings
from bot.features.moderation.repository import AuditEntry, ModerationStore
from bot.features.moderation.values import parse_value
from bot.scheduler import Scheduler
from bot.storage import JobRecord, Storage
from generation.errors import ConfigError

_log = logging.getLogger(__name__)

NOT_A_MODERATOR = ("Only this server's moderators can use /mod: members with the Manage Server permission or a "
                   "moderator role. Nothing was changed.")
SERVERS_ONLY = "/mod works in servers only: use it in a channel of the server you moderate."
NO_SUCH_JOB = ("No request of this server matches that. Give the job's id or the link to its message "
               "(right-click the message → Copy Message Link).")
_MESSAGE_LINK = re.compile(r"https?://(?:[\w-]+\.)*discord(?:app)?\.com/channels/(\d+|@me)/(\d+)/(\d+)/?")
_JOB_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Actor:
    """Who runs a /mod command, where, and their name as the audit log keeps it."""

    requester: Requester
    name: str


@dataclass(frozen=True)
class Changed:
    """A change that was made (and logged): what, and its value before and after."""

    what: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Reloaded:
    ok: bool
    message: str  # the rejection (config.yaml's message), or why this server's stored settings are skipped


def _json(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if dump is not None else value


class ModerationService:
    def __init__(self, config: ConfigStore, storage: Storage, scheduler: Scheduler, store: ModerationStore) -> None:
        self._config = config
        self._storage = storage
        self._scheduler = scheduler
        self._store = store
        self._changing = asyncio.Lock()

    async def start(self) -> None:
        """Pause again the servers that were paused when the bot stopped (before any queued job resumes)."""
        for guild_id in await self._store.paused_guilds():
            self._scheduler.pause_guild(guild_id)

    @property
    def current(self) -> AppConfig:
        return self._config.current

    # --- who ----------------------------------------------------------------------------------------
    def is_moderator(self, requester: Requester) -> bool:
        return requester.moderates(requester.guild_id, self._config.current)

    def guild_of(self, actor: Actor) -> int:
        """The server the actor moderates and acts on; NotPermitted for anyone else (and in DMs)."""
        requester = actor.requester
        if requester.in_dm:
            raise NotPermitted(SERVERS_ONLY)
        if not self.is_moderator(requester):
            raise NotPermitted(NOT_A_MODERATOR)
        return requester.guild_id

    def _entry(self, actor: Actor, command: str, target: str, before: Any = None, after: Any = None,
               subject_id: int | None = None) -> AuditEntry:
        return AuditEntry(guild_id=actor.requester.guild_id, actor_id=actor.requester.user_id, actor_name=actor.name,
                          command=command, target=target, before=before, after=after, subject_id=subject_id)

    # --- settings -------------------------------------------------------------------------------------
    async def _change(self, actor: Actor, command: str, target: str, edit: Callable[[Overrides], Overrides],
                      show: Callable[[AppConfig], Any], subject_id: int | None = None) -> Changed:
        guild_id = self.guild_of(actor)
        async with self._changing:
            config = self._config
            stored = config.overrides(guild_id)
            edited = edit(stored)
            if edited == stored:  # nothing to store, nothing to log
                raise InvalidSetting("That is this server's setting already; nothing changed.")
            try:
                guild = config.check_overrides(guild_id, edited)
            except ConfigError as exc:
                raise InvalidSetting(f"Not changed: {exc}") from None
            current = config.current
            before = _json(show(current))
            after = _json(show(current.model_copy(update={"guilds": {**current.guilds, guild_id: guild}})))
            await self._store.save_settings(guild_id, edited, self._entry(actor, command, target, before, after,
                                                                          subject_id))
            # Checked above; a reload that came in meanwhile may make them not fit: then they are kept and
            # skipped (and logged) as at start-up, never half applied.
            config.set_overrides(guild_id, edited, check=False)
            _log.info("/mod %s %s in server %s by %s (%s): %r -> %r", command, target, guild_id,
                      actor.requester.user_id, actor.name, before, after)
            return Changed(target, before, after)

    def limit_lines(self, actor: Actor, role_ids: frozenset[int]) -> list[settings.LimitLine]:
        guild_id = self.guild_of(actor)
        return settings.limit_lines(self._config.current, self._config.overrides(guild_id), guild_id, role_ids)

    def skipped(self, actor: Actor) -> str | None:
        """Why this server's stored settings do not apply at the moment (they stopped fitting config.yaml)."""
        return self._config.skipped_overrides.get(self.guild_of(actor))

    async def set_limit(self, actor: Actor, key: str, text: str, role_id: int | None = None) -> Changed:
        try:
            value = parse_value(key, text)
        except ConfigError as exc:
            raise InvalidSetting(f"Not changed: {exc}") from None
        return await self._change(actor, "limits set", self._limit_target(key, role_id),
                                  lambda stored: settings.set_limit(stored, key, value, role_id),
                                  self._limit_shown(actor, key, role_id))

    async def reset_limit(self, actor: Actor, key: str, role_id: int | None = None) -> Changed:
        return await self._change(actor, "limits reset", self._limit_target(key, role_id),
                                  lambda stored: settings.reset_limit(stored, key, role_id),
                                  self._limit_shown(actor, key, role_id))

    @staticmethod
    def _limit_target(key: str, role_id: int | None) -> str:
        return key if role_id is None else f"{key} for <@&{role_id}>"

    @staticmethod
    def _limit_shown(actor: Actor, key: str, role_id: int | None) -> Callable[[AppConfig], Any]:
        roles = frozenset() if role_id is None else frozenset({role_id})
        guild_id = actor.requester.guild_id
        return lambda config: getattr(resolve_limits(config, guild_id, roles), key, None)

    def channels(self, actor: Actor) -> tuple[list[int], bool]:
        """The allow-list (empty: every channel) and whether /mod set it."""
        guild_id = self.guild_of(actor)
        return self._allowed(guild_id), "channels" in self._config.overrides(guild_id)

    def _allowed(self, guild_id: int, config: AppConfig | None = None) -> list[int]:
        guild = (config or self._config.current).guilds.get(guild_id)
        return list(guild.channels) if guild is not None else []

    async def allow_channel(self, actor: Actor, channel_id: int) -> Changed:
        guild_id = actor.requester.guild_id

        def edit(stored: Overrides) -> Overrides:  # run under the change lock, on the settings of that moment
            allowed = self._allowed(guild_id)
            if channel_id in allowed:
                raise InvalidSetting(f"<#{channel_id}> is already on this server's list; nothing changed.")
            return settings.with_list(stored, "channels", [*allowed, channel_id])
        return await self._change(actor, "channels allow", f"<#{channel_id}>", edit,
                                  lambda config: self._allowed(guild_id, config))

    async def deny_channel(self, actor: Actor, channel_id: int) -> Changed:
        guild_id = actor.requester.guild_id

        def edit(stored: Overrides) -> Overrides:
            allowed = self._allowed(guild_id)
            if not allowed:
                raise InvalidSetting("This server's list is empty, so /imagine works in every channel. Allow the "
                                     "channels it should work in with /mod channels allow; the others are then "
                                     "refused.")
            if channel_id not in allowed:
                raise InvalidSetting(f"<#{channel_id}> is not on this server's list; nothing changed.")
            return settings.with_list(stored, "channels", [channel for channel in allowed if channel != channel_id])
        return await self._change(actor, "channels deny", f"<#{channel_id}>", edit,
                                  lambda config: self._allowed(guild_id, config))

    def rules(self, actor: Actor) -> tuple[list[ContentRule], list[ContentRule]]:
        """(this server's rules, every server's rules from config.yaml)."""
        guild_id = self.guild_of(actor)
        config = self._config.current
        guild = config.guilds.get(guild_id)
        return (list(guild.content.rules) if guild else []), list(config.content.rules)

    def _rule_shown(self, actor: Actor, rule_id: str) -> Callable[[AppConfig], list[str]]:
        guild_id = actor.requester.guild_id

        def words(config: AppConfig) -> list[str]:
            guild = config.guilds.get(guild_id)
            rule = next((rule for rule in guild.content.rules if rule.id == rule_id), None) if guild else None
            return list(rule.words) if rule is not None else []
        return words

    async def add_term(self, actor: Actor, rule_id: str, term: str) -> Changed:
        return await self._change(actor, "blocklist add", rule_id,
                                  lambda stored: settings.add_term(stored, self.rules(actor)[0], rule_id, term),
                                  self._rule_shown(actor, rule_id))

    async def remove_term(self, actor: Actor, rule_id: str, term: str) -> Changed:
        def edit(stored: Overrides) -> Overrides:
            server_rules, bot_rules = self.rules(actor)
            file_guild = self._config.file.guilds.get(actor.requester.guild_id)
            from_file = file_guild is not None and any(rule.id == rule_id for rule in file_guild.content.rules)
            return settings.remove_term(stored, server_rules, bot_rules, rule_id, term, from_file=from_file)
        return await self._change(actor, "blocklist remove", rule_id, edit, self._rule_shown(actor, rule_id))

    def safety(self, actor: Actor) -> dict[str, tuple[str | None, str]]:
        """Each safety key: (the mode in effect here, where it comes from)."""
        guild_id = self.guild_of(actor)
        config = self._config.current
        guild = config.guilds.get(guild_id)
        stored = self._config.overrides(guild_id).get("safety") or {}
        shown: dict[str, tuple[str | None, str]] = {}
        for key in settings.SAFETY_KEYS:
            value = getattr(guild.safety, key) if guild is not None else None
            if value is not None:
                shown[key] = (value, settings.SERVER_MOD if key in stored else settings.SERVER_FILE)
            else:
                shown[key] = (getattr(config.safety, key), settings.FILE_DEFAULT)
        return shown

    async def set_safety(self, actor: Actor, key: str, mode: str | None) -> Changed:
        guild_id = actor.requester.guild_id

        def shown(config: AppConfig) -> str | None:
            guild = config.guilds.get(guild_id)
            value: str | None = getattr(guild.safety, key) if guild is not None else None
            fallback: str | None = getattr(config.safety, key)
            return value if value is not None else fallback
        return await self._change(actor, "safety", key, lambda stored: settings.set_safety(stored, key, mode), shown)

    def banned(self, actor: Actor) -> list[int]:
        guild = self._config.current.guilds.get(self.guild_of(actor))
        return list(guild.banned_users) if guild else []

    async def ban(self, actor: Actor, user_id: int) -> Changed:
        def edit(stored: Overrides) -> Overrides:
            banned = self.banned(actor)
            if user_id in banned:
                raise InvalidSetting(f"<@{user_id}> is already banned from the bot here; nothing changed.")
            return settings.with_list(stored, "banned_users", [*banned, user_id])
        return await self._change(actor, "ban", f"<@{user_id}>", edit, self._is_banned(actor, user_id),
                                  subject_id=user_id)

    async def unban(self, actor: Actor, user_id: int) -> Changed:
        def edit(stored: Overrides) -> Overrides:
            banned = self.banned(actor)
            if user_id not in banned:
                raise InvalidSetting(f"<@{user_id}> is not banned from the bot here; nothing changed.")
            remaining = [banned_id for banned_id in banned if banned_id != user_id]
            return settings.with_list(stored, "banned_users", remaining)
        return await self._change(actor, "unban", f"<@{user_id}>", edit, self._is_banned(actor, user_id),
                                  subject_id=user_id)

    @staticmethod
    def _is_banned(actor: Actor, user_id: int) -> Callable[[AppConfig], str]:
        guild_id = actor.requester.guild_id

        def shown(config: AppConfig) -> str:  # words, as the audit log shows them
            banned = guild_id in config.guilds and user_id in config.guilds[guild_id].banned_users
            return "banned" if banned else "not banned"
        return shown

    # --- the queue and its jobs -------------------------------------------------------------------------
    async def set_paused(self, actor: Actor, paused: bool) -> Changed:
        guild_id = self.guild_of(actor)
        async with self._changing:
            if self._scheduler.is_paused(guild_id) == paused:
                raise InvalidSetting(f"This server's queue is already {'paused' if paused else 'running'}.")
            before, after = ("running", "paused") if paused else ("paused", "running")
            command = "pause" if paused else "resume"
            await self._store.set_paused(guild_id, paused, self._entry(actor, command, "queue", before, after))
            (self._scheduler.pause_guild if paused else self._scheduler.resume_guild)(guild_id)
            return Changed("queue", before, after)

    async def find_job(self, actor: Actor, reference: str) -> JobRecord:
        """The job a moderator names by its id or its message's link, in their own server only."""
        guild_id = self.guild_of(actor)
        reference = reference.strip().strip("<>")
        link = _MESSAGE_LINK.fullmatch(reference)
        job = None
        if link is not None:
            if link[1] == str(guild_id):  # another server's link names nothing here
                job = await self._storage.find_job_by_message(int(link[3]))
        elif _JOB_ID.fullmatch(reference.lower()):
            job = await self._storage.get_job(reference.lower())
        elif reference.isdigit():
            job = await self._storage.find_job_by_message(int(reference))
        if job is None or job.guild_id != guild_id:
            raise JobNotFound(reference, NO_SUCH_JOB)
        return job

    async def cancel(self, actor: Actor, reference: str) -> JobRecord:
        job = await self.find_job(actor, reference)
        live = self._scheduler.get(job.id)
        if live is not None and live.cancel_token.cancelled:  # running, and stopping at its next step
            raise InvalidSetting("That request is being cancelled already; nothing changed.")
        before = live.state.value if live is not None else job.status
        # The same path as the requester's ✖: the scheduler ends the job (its subscribers show "Cancelled."),
        # and the cancel is stored at once, so a restart never brings the job back.
        self._scheduler.cancel(job.id, by=actor.requester)
        await self._storage.record_cancel(job.id)
        await self._store.record(self._entry(actor, "cancel", job.id, before, "cancelled", subject_id=job.user_id))
        return job

    async def purge(self, actor: Actor, user_id: int) -> list[str]:
        """Cancel every queued or running job of ``user_id`` in this server; their ids, in queue order."""
        guild_id = self.guild_of(actor)
        snapshot = self._scheduler.snapshot(guild_id=guild_id, user_id=user_id)
        jobs = [job for job in (*snapshot.running, *(entry.job for entry in snapshot.queued))
                if not job.cancel_token.cancelled]  # a running job already told to stop is being cancelled
        if not jobs:
            raise InvalidSetting(f"<@{user_id}> has no queued or running requests in this server; nothing changed.")
        cancelled = []
        for job in jobs:
            try:
                self._scheduler.cancel(job.id, by=actor.requester)
            except JobNotFound:  # it ended meanwhile
                continue
            await self._storage.record_cancel(job.id)
            cancelled.append(job.id)
        await self._store.record(self._entry(actor, "purge", f"<@{user_id}>", cancelled, "cancelled",
                                             subject_id=user_id))
        return cancelled

    # --- the file, and the log --------------------------------------------------------------------------
    async def reload(self, actor: Actor) -> Reloaded:
        guild_id = self.guild_of(actor)
        async with self._changing:  # not in the middle of a change checked against the old file
            try:
                await self._config.reload_async()
            except ConfigError as exc:
                # The file's name, not its path: where the operator keeps it is theirs to know.
                path = self._config.path
                outcome = Reloaded(False, str(exc).replace(str(path), path.name) if path is not None else str(exc))
            else:
                outcome = Reloaded(True, self._config.skipped_overrides.get(guild_id, ""))
        await self._store.record(self._entry(actor, "reload", "config.yaml", None,
                                             "reloaded" if outcome.ok else f"rejected: {outcome.message}"))
        return outcome

    async def audit(self, actor: Actor, user_id: int | None = None, limit: int = 10) -> list[AuditEntry]:
        return await self._store.audit(self.guild_of(actor), user_id=user_id, limit=limit)
