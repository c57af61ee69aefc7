"""What ``/mod`` answers (always privately, to the moderator who asked), built from plain values.

Config keys appear here on purpose: moderators set them by name, and config.yaml uses the same names.
Text that members typed (terms, names) is escaped once, and every answer fits one message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.core.policy import ContentRule
from bot.discord_ui.markdown import sanitize_user_text
from bot.discord_ui.texts import MESSAGE_LIMIT
from bot.features.moderation.repository import AuditEntry
from bot.features.moderation.service import Changed, Reloaded
from bot.features.moderation.settings import LimitLine
from bot.features.moderation.values import show_value

CHANGED_NOTE = "From the next request; logged in /mod audit."


def fit(lines: Sequence[str], limit: int = MESSAGE_LIMIT) -> str:
    """``lines`` joined, cut at a whole line with a count of what was left out when they do not fit."""
    shown: list[str] = []
    for index, line in enumerate(lines):
        rest = len(lines) - index
        tail = f"… and {rest} more line{'s' if rest != 1 else ''}"
        if len("\n".join([*shown, line])) + len(tail) + 1 > limit and index < len(lines) - 1:
            return "\n".join([*shown, tail])
        shown.append(line[:limit])
    return "\n".join(shown)[:limit]


def _channels(channels: Sequence[int]) -> str:
    return ", ".join(f"<#{channel}>" for channel in channels)


def limits_text(lines: Sequence[LimitLine], whom: str, skipped: str | None) -> str:
    head = [f"**Limits {whom}** (value · where it comes from):"]
    body = [f"`{line.key}`: {show_value(line.value)} · {line.source}" for line in lines]
    return fit([*head, *body, *_skipped(skipped), "Change one with /mod limits set, undo it with /mod limits reset."])


def _skipped(skipped: str | None) -> list[str]:
    if not skipped:
        return []
    return [f"⚠ This server's stored /mod settings don't fit config.yaml now and are skipped: {skipped}"]


def changed_text(what: str, changed: Changed, note: str = CHANGED_NOTE) -> str:
    return f"✅ {what}: {show_value(changed.before)} → {show_value(changed.after)}. {note}"


def channels_text(channels: Sequence[int], by_mod: bool) -> str:
    if not channels:
        return "/imagine works in every channel of this server (the allow-list is empty)."
    source = "set by /mod" if by_mod else "from config.yaml"
    return f"/imagine works in {_channels(channels)} and their threads ({source})."


def channel_changed_text(channel_id: int, allowed: bool, changed: Changed) -> str:
    now: list[int] = list(changed.after or [])
    if allowed:
        head = f"✅ /imagine now works in <#{channel_id}> and its threads."
    else:
        head = f"✅ <#{channel_id}> is off the list."
    tail = f" Allowed now: {_channels(now)}." if now else " The list is empty now: /imagine works in every channel."
    return f"{head}{tail} {CHANGED_NOTE}"


def _rule_line(rule: ContentRule) -> str:
    terms = ", ".join(sanitize_user_text(word) for word in rule.words) or "(no words)"
    patterns = f" · patterns: {', '.join(f'`{pattern}`' for pattern in rule.patterns)}" if rule.patterns else ""
    return f"`{rule.id}`: {terms}{patterns}"


def blocklist_text(server: Sequence[ContentRule], everywhere: Sequence[ContentRule]) -> str:
    lines = ["**This server's rules** (/mod blocklist add and remove):"]
    lines += [_rule_line(rule) for rule in server] or ["none"]
    lines += ["**Every server's rules** (config.yaml, the bot's operator):"]
    lines += [_rule_line(rule) for rule in everywhere] or ["none"]
    return fit(lines)


def term_changed_text(rule_id: str, added: bool, changed: Changed) -> str:
    count = len(changed.after or [])
    verb = "Added to" if added else "Removed from"
    return f"✅ {verb} rule `{rule_id}`; it has {count} term{'s' if count != 1 else ''} now. {CHANGED_NOTE}"


def safety_text(shown: dict[str, tuple[str | None, str]]) -> str:
    lines = ["**Safety checker** (what happens to an image it flags):"]
    lines += [f"`{key}`: {mode or 'off'} · {source}" for key, (mode, source) in shown.items()]
    lines.append("`mode` applies in every channel but those Discord marks age-restricted, which follow "
                 "`nsfw_channel_mode`. Set them with /mod safety mode: … nsfw_channel_mode: … (default: "
                 "config.yaml's).")
    return "\n".join(lines)


def paused_text(paused: bool) -> str:
    if paused:
        return ("⏸ This server's queue is paused: queued requests wait, new ones are refused. /mod resume "
                "starts it again.")
    return "▶ This server's queue runs again."


def cancelled_text(owner_id: int) -> str:
    return f"✅ Cancelled <@{owner_id}>'s request; its message says so."


def purged_text(user_id: int, count: int) -> str:
    return f"✅ Cancelled {count} request{'s' if count != 1 else ''} of <@{user_id}> in this server."


def ban_text(user_id: int, banned: bool) -> str:
    if banned:
        return (f"✅ <@{user_id}> is banned from the bot in this server: their /imagine and image buttons are "
                "refused from now on. Requests already queued still run; /mod purge cancels them.")
    return f"✅ <@{user_id}> may use the bot in this server again."


def reload_text(outcome: Reloaded) -> str:
    if not outcome.ok:
        return f"config.yaml was not reloaded; the running config stays. {outcome.message}"[:MESSAGE_LIMIT]
    return "\n".join(["✅ config.yaml reloaded; this server's /mod settings apply on top of it.",
                      *_skipped(outcome.message)])[:MESSAGE_LIMIT]


def _when(moment: datetime | None) -> str:
    return f"<t:{int(moment.timestamp())}:f>" if moment is not None else "?"


def _change(before: Any, after: Any) -> str:
    if before is None and after is None:
        return ""
    return sanitize_user_text(f": {show_value(before)} → {show_value(after)}")  # may hold terms members typed


def audit_text(entries: Sequence[AuditEntry], whom: str) -> str:
    if not entries:
        return f"No /mod changes {whom} yet."
    lines = [f"**/mod changes {whom}**, newest first:"]
    for entry in entries:
        lines.append(f"{_when(entry.created_at)} <@{entry.actor_id}> ({sanitize_user_text(entry.actor_name)}) · "
                     f"{entry.command} {entry.target}{_change(entry.before, entry.after)}")
    return fit(lines)
