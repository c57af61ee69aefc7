"""``/mod``: the moderators' commands. Thin: read the interaction, call the moderation service, answer
privately. Errors (not a moderator, a value that does not fit) are raised from the ``bot.core.errors``
tree and answered privately by the app's error handler.

Discord shows the group only to members with Manage Server (``default_permissions``) unless a server
admin opens it to more roles (Server Settings → Integrations); the service checks every call anyway:
Manage Server or one of the server's ``moderator_roles``. Autocomplete answers non-moderators with
nothing, so rule ids and terms never reach them.
"""

from __future__ import annotations

from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.config import resolve_limits
from bot.discord_ui.interactions import NO_MENTIONS, requester_of
from bot.features.moderation import texts
from bot.features.moderation.service import Actor, ModerationService
from bot.features.moderation.settings import LIMIT_KEYS, ROLE_KEYS
from bot.features.moderation.values import BUCKET_FORM, show_value

SafetyChoice = Literal["off", "spoiler", "blur", "refuse", "default"]
Choices = list[app_commands.Choice[str]]


def _choices(names: list[str], current: str, label: dict[str, str] | None = None) -> Choices:
    wanted = current.casefold()
    return [app_commands.Choice(name=(label or {}).get(name, name)[:100], value=name[:100])
            for name in names if wanted in name.casefold()][:25]


class ModerationCog(commands.Cog, name="Moderation"):
    # Servers only (contexts, and the older dm_permission), shown to Manage Server unless an admin opens it wider.
    mod = app_commands.Group(name="mod", description="For moderators: limits, channels, blocklist, queue, bans, log",
                             guild_only=True, allowed_contexts=app_commands.AppCommandContext(guild=True),
                             default_permissions=discord.Permissions(manage_guild=True))
    limits = app_commands.Group(name="limits", description="Admission limits in this server", parent=mod)
    channels = app_commands.Group(name="channels", description="Where /imagine works in this server", parent=mod)
    blocklist = app_commands.Group(name="blocklist", description="This server's blocked words", parent=mod)

    def __init__(self, service: ModerationService) -> None:
        self._service = service

    @staticmethod
    def _actor(interaction: discord.Interaction[Any]) -> Actor:
        return Actor(requester_of(interaction), interaction.user.name)

    @staticmethod
    async def _say(interaction: discord.Interaction[Any], text: str) -> None:
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

    def _moderating(self, interaction: discord.Interaction[Any]) -> bool:
        """Autocomplete runs no command checks: it answers moderators only."""
        requester = requester_of(interaction)
        return not requester.in_dm and self._service.is_moderator(requester)

    # --- limits -------------------------------------------------------------------------------------
    @limits.command(name="show", description="Each limit in effect here, and where its value comes from")
    @app_commands.describe(user="A member: their limits, roles included", role="A role: a member holding only it")
    async def limits_show(self, interaction: discord.Interaction[Any], user: discord.Member | None = None,
                          role: discord.Role | None = None) -> None:
        actor = self._actor(interaction)
        if user is not None:
            roles, whom = frozenset(held.id for held in user.roles), f"for {user.mention}"
        elif role is not None:
            roles, whom = frozenset({role.id}), f"for a member with {role.mention}"
        else:
            roles, whom = frozenset(), "in this server (a member without role overrides)"
        lines = self._service.limit_lines(actor, roles)
        await self._say(interaction, texts.limits_text(lines, whom, self._service.skipped(actor)))

    @limits.command(name="set", description="Set a limit for this server, or for one role")
    @app_commands.describe(key="The limit's key, as in config.yaml", role="Only for members with this role",
                           value=f"As in config.yaml: a number, null for no limit; a bucket as {BUCKET_FORM}"[:100])
    async def limits_set(self, interaction: discord.Interaction[Any], key: str, value: str,
                         role: discord.Role | None = None) -> None:
        changed = await self._service.set_limit(self._actor(interaction), key, value, role.id if role else None)
        where = f" for {role.mention}" if role else ""
        await self._say(interaction, texts.changed_text(f"`{key}`{where}", changed))

    @limits.command(name="reset", description="Undo /mod limits set: the value from config.yaml applies again")
    @app_commands.describe(key="The limit's key", role="The role it was set for")
    async def limits_reset(self, interaction: discord.Interaction[Any], key: str,
                           role: discord.Role | None = None) -> None:
        changed = await self._service.reset_limit(self._actor(interaction), key, role.id if role else None)
        where = f" for {role.mention}" if role else ""
        await self._say(interaction, texts.changed_text(f"`{key}`{where} follows config.yaml again", changed))

    @limits_set.autocomplete("key")
    @limits_reset.autocomplete("key")
    async def _limit_keys(self, interaction: discord.Interaction[Any], current: str) -> Choices:
        if not self._moderating(interaction):
            return []
        role = getattr(interaction.namespace, "role", None)
        keys = list(ROLE_KEYS if role is not None else LIMIT_KEYS)
        roles = frozenset({role.id}) if role is not None else frozenset()
        limits = resolve_limits(self._service.current, interaction.guild_id or 0, roles)
        labels = {key: f"{key} (now {show_value(getattr(limits, key))})" for key in keys}
        return _choices(keys, current, labels)

    # --- channels -------------------------------------------------------------------------------------
    @staticmethod
    def _channel_id(interaction: discord.Interaction[Any], channel: discord.TextChannel | discord.Thread | None) -> int:
        """The channel named, else this one; a thread stands for its channel (the allow-list lists channels)."""
        chosen = channel if channel is not None else interaction.channel
        if isinstance(chosen, discord.Thread):
            return chosen.parent_id
        return chosen.id if chosen is not None else interaction.channel_id or 0

    @channels.command(name="allow", description="Let /imagine work in a channel (and its threads)")
    @app_commands.describe(channel="The channel (default: this one); a thread counts as its channel")
    async def channels_allow(self, interaction: discord.Interaction[Any],
                             channel: discord.TextChannel | discord.Thread | None = None) -> None:
        channel_id = self._channel_id(interaction, channel)
        changed = await self._service.allow_channel(self._actor(interaction), channel_id)
        await self._say(interaction, texts.channel_changed_text(channel_id, True, changed))

    @channels.command(name="deny", description="Take a channel off the list where /imagine works")
    @app_commands.describe(channel="The channel (default: this one); a thread counts as its channel")
    async def channels_deny(self, interaction: discord.Interaction[Any],
                            channel: discord.TextChannel | discord.Thread | None = None) -> None:
        channel_id = self._channel_id(interaction, channel)
        changed = await self._service.deny_channel(self._actor(interaction), channel_id)
        await self._say(interaction, texts.channel_changed_text(channel_id, False, changed))

    @channels.command(name="list", description="Where /imagine works in this server")
    async def channels_list(self, interaction: discord.Interaction[Any]) -> None:
        allowed, by_mod = self._service.channels(self._actor(interaction))
        await self._say(interaction, texts.channels_text(allowed, by_mod))

    # --- blocklist ------------------------------------------------------------------------------------
    @blocklist.command(name="add", description="Block a word or phrase in prompts, under a rule id members see")
    @app_commands.describe(rule="The rule's id (made if new): members see it when refused, never the term",
                           term="The word or phrase")
    async def blocklist_add(self, interaction: discord.Interaction[Any], rule: str, term: str) -> None:
        changed = await self._service.add_term(self._actor(interaction), rule, term)
        await self._say(interaction, texts.term_changed_text(rule, True, changed))

    @blocklist.command(name="remove", description="Unblock a word or phrase of this server's rule")
    @app_commands.describe(rule="The rule's id", term="The word or phrase")
    async def blocklist_remove(self, interaction: discord.Interaction[Any], rule: str, term: str) -> None:
        changed = await self._service.remove_term(self._actor(interaction), rule, term)
        await self._say(interaction, texts.term_changed_text(rule, False, changed))

    @blocklist.command(name="list", description="The rules and their terms (only you see them)")
    async def blocklist_list(self, interaction: discord.Interaction[Any]) -> None:
        server, everywhere = self._service.rules(self._actor(interaction))
        await self._say(interaction, texts.blocklist_text(server, everywhere))

    @blocklist_add.autocomplete("rule")
    @blocklist_remove.autocomplete("rule")
    async def _rule_ids(self, interaction: discord.Interaction[Any], current: str) -> Choices:
        if not self._moderating(interaction):
            return []
        server, _ = self._service.rules(self._actor(interaction))
        return _choices([rule.id for rule in server], current)

    @blocklist_remove.autocomplete("term")
    async def _terms(self, interaction: discord.Interaction[Any], current: str) -> Choices:
        if not self._moderating(interaction):
            return []
        server, _ = self._service.rules(self._actor(interaction))
        wanted = getattr(interaction.namespace, "rule", None)
        return _choices([word for rule in server if rule.id == wanted for word in rule.words], current)

    # --- safety, the queue, jobs, members -----------------------------------------------------------------
    @mod.command(name="safety", description="Show or set what happens to images the safety checker flags here")
    @app_commands.describe(mode="In every channel but age-restricted ones (default: config.yaml's)",
                           nsfw_channel_mode="In channels Discord marks age-restricted (default: config.yaml's)")
    async def safety(self, interaction: discord.Interaction[Any], mode: SafetyChoice | None = None,
                     nsfw_channel_mode: SafetyChoice | None = None) -> None:
        actor = self._actor(interaction)
        lines = []
        for key, chosen in (("mode", mode), ("nsfw_channel_mode", nsfw_channel_mode)):
            if chosen is not None:
                changed = await self._service.set_safety(actor, key, None if chosen == "default" else chosen)
                lines.append(texts.changed_text(f"`safety.{key}`", changed))
        lines.append(texts.safety_text(self._service.safety(actor)))
        await self._say(interaction, "\n".join(lines))

    @mod.command(name="pause", description="Pause this server's queue: queued requests wait, new ones are refused")
    async def pause(self, interaction: discord.Interaction[Any]) -> None:
        await self._service.set_paused(self._actor(interaction), True)
        await self._say(interaction, texts.paused_text(True))

    @mod.command(name="resume", description="Start this server's queue again")
    async def resume(self, interaction: discord.Interaction[Any]) -> None:
        await self._service.set_paused(self._actor(interaction), False)
        await self._say(interaction, texts.paused_text(False))

    @mod.command(name="cancel", description="Cancel a queued or running request of this server")
    @app_commands.describe(job="The link to its message (right-click → Copy Message Link), or its job id")
    async def cancel(self, interaction: discord.Interaction[Any], job: str) -> None:
        cancelled = await self._service.cancel(self._actor(interaction), job)
        await self._say(interaction, texts.cancelled_text(cancelled.user_id))

    @mod.command(name="purge", description="Cancel every queued or running request of a member in this server")
    @app_commands.describe(user="The member")
    async def purge(self, interaction: discord.Interaction[Any], user: discord.User) -> None:
        cancelled = await self._service.purge(self._actor(interaction), user.id)
        await self._say(interaction, texts.purged_text(user.id, len(cancelled)))

    @mod.command(name="ban", description="Stop a member from using the bot in this server")
    @app_commands.describe(user="The member")
    async def ban(self, interaction: discord.Interaction[Any], user: discord.User) -> None:
        await self._service.ban(self._actor(interaction), user.id)
        await self._say(interaction, texts.ban_text(user.id, True))

    @mod.command(name="unban", description="Let a banned member use the bot in this server again")
    @app_commands.describe(user="The member")
    async def unban(self, interaction: discord.Interaction[Any], user: discord.User) -> None:
        await self._service.unban(self._actor(interaction), user.id)
        await self._say(interaction, texts.ban_text(user.id, False))

    @mod.command(name="reload", description="Read config.yaml again (this server's /mod settings stay on top)")
    async def reload(self, interaction: discord.Interaction[Any]) -> None:
        actor = self._actor(interaction)
        self._service.guild_of(actor)  # a refusal first, as the only answer
        await interaction.response.defer(ephemeral=True, thinking=True)  # the file is read off the event loop
        outcome = await self._service.reload(actor)
        await interaction.followup.send(texts.reload_text(outcome), ephemeral=True, allowed_mentions=NO_MENTIONS)

    @mod.command(name="audit", description="The log of /mod changes in this server, newest first")
    @app_commands.describe(user="Only changes made by or about this member", limit="How many (1-50, default 10)")
    async def audit(self, interaction: discord.Interaction[Any], user: discord.User | None = None,
                    limit: app_commands.Range[int, 1, 50] = 10) -> None:
        entries = await self._service.audit(self._actor(interaction), user.id if user else None, limit)
        whom = f"by or about {user.mention}" if user else "in this server"
        await self._say(interaction, texts.audit_text(entries, whom))
