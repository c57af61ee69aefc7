"""A server's stored settings (``/mod``), edited as plain mappings in the shape of ``guilds.<id>`` in
config.yaml (see ``bot.core.overrides``), and where each effective limit comes from.

Pure functions: the service validates the result through the config store before anything is stored.
An edit keeps only what moderators changed, so the file still decides every key they never touched.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.core.config import AppConfig, Limits, UserLimits, resolve_limits
from bot.core.errors import InvalidSetting
from bot.core.overrides import Overrides
from bot.core.policy import ContentRule

LIMIT_KEYS: tuple[str, ...] = tuple(Limits.model_fields)
ROLE_KEYS: tuple[str, ...] = tuple(UserLimits.model_fields)
SAFETY_KEYS = ("mode", "nsfw_channel_mode")

FILE_DEFAULT = "config.yaml default"
SERVER_FILE = "server override (config.yaml)"
SERVER_MOD = "server override (set by /mod)"


@dataclass(frozen=True)
class LimitLine:
    key: str
    value: Any
    source: str


def _role_source(role: str, by_mod: bool) -> str:
    return f"role override {role} ({'set by /mod' if by_mod else 'config.yaml'})"


def limit_lines(config: AppConfig, stored: Mapping[str, Any], guild_id: int,
                role_ids: Iterable[int]) -> list[LimitLine]:
    """Every limit a member with ``role_ids`` has in this server, with where its value comes from."""
    roles = frozenset(role_ids)
    effective = resolve_limits(config, guild_id, roles)
    guild = config.guilds.get(guild_id)
    stored_limits = stored.get("limits") or {}
    stored_roles = stored.get("roles") or {}
    lines = []
    for key in LIMIT_KEYS:
        value = getattr(effective, key)
        source = FILE_DEFAULT
        if guild is not None:
            setting = [role for role in sorted(roles) if role in guild.roles
                       and key in guild.roles[role].model_fields_set and getattr(guild.roles[role], key) == value]
            if setting:  # the most generous role's value won (resolve_limits): name that role
                role = setting[0]
                source = _role_source(f"<@&{role}>", key in (stored_roles.get(str(role)) or {}))
            elif key in guild.limits.model_fields_set:
                source = SERVER_MOD if key in stored_limits else SERVER_FILE
        lines.append(LimitLine(key, value, source))
    return lines


def _limits_of(overrides: Overrides, role_id: int | None) -> dict[str, Any]:
    if role_id is None:
        return dict(overrides.get("limits") or {})
    return dict((overrides.get("roles") or {}).get(str(role_id)) or {})


def _with_limits(overrides: Overrides, role_id: int | None, limits: dict[str, Any]) -> Overrides:
    edited = copy.deepcopy(overrides)
    if role_id is None:
        edited["limits"] = limits
        if not limits:
            del edited["limits"]
        return edited
    roles = dict(edited.get("roles") or {})
    roles[str(role_id)] = limits
    if not limits:
        del roles[str(role_id)]
    edited["roles"] = roles
    if not roles:
        del edited["roles"]
    return edited


def set_limit(overrides: Overrides, key: str, value: Any, role_id: int | None = None) -> Overrides:
    """The server's (or one role's) ``key`` set to ``value``, from now on whatever the file says. An unknown key
    is left for validation to refuse, in the file's words."""
    limits = _limits_of(overrides, role_id)
    limits[key] = value
    return _with_limits(overrides, role_id, limits)


def reset_limit(overrides: Overrides, key: str, role_id: int | None = None) -> Overrides:
    """``key`` back to what the file says; InvalidSetting when /mod never set it."""
    limits = _limits_of(overrides, role_id)
    if key not in limits:
        where = "this role" if role_id is not None else "this server"
        raise InvalidSetting(f"{key} is not set by /mod for {where}; it already follows config.yaml.")
    del limits[key]
    return _with_limits(overrides, role_id, limits)


def with_list(overrides: Overrides, key: str, values: list[int]) -> Overrides:
    """``channels`` or ``banned_users`` replaced by ``values`` (the stored list wins over the file's)."""
    edited = copy.deepcopy(overrides)
    edited[key] = values
    return edited


def _stored_rules(overrides: Overrides) -> list[dict[str, Any]]:
    return [dict(rule) for rule in (overrides.get("content") or {}).get("rules") or []]


def _with_rule(overrides: Overrides, rule: dict[str, Any] | None, rule_id: str) -> Overrides:
    edited = copy.deepcopy(overrides)
    rules = [stored for stored in _stored_rules(overrides) if stored.get("id") != rule_id]
    if rule is not None:
        rules.append(rule)
    content = dict(edited.get("content") or {})
    content["rules"] = rules
    if not rules:
        del content["rules"]
    edited["content"] = content
    if not content:
        del edited["content"]
    return edited


def _same(term: str, other: str) -> bool:
    return term.casefold() == other.casefold()


def add_term(overrides: Overrides, server_rules: list[ContentRule], rule_id: str, term: str) -> Overrides:
    """``term`` added to the server's rule ``rule_id`` (made if there is none)."""
    term = term.strip()
    if not term:
        raise InvalidSetting("the term is empty; allowed: a word or phrase")
    rule = next((found for found in server_rules if found.id == rule_id), None)
    words = list(rule.words) if rule is not None else []
    if any(_same(term, word) for word in words):
        raise InvalidSetting(f"rule {rule_id} already has that term; nothing changed.")
    base = rule.model_dump(mode="json") if rule is not None else {"id": rule_id}
    return _with_rule(overrides, {**base, "words": [*words, term]}, rule_id)


def remove_term(overrides: Overrides, server_rules: list[ContentRule], bot_rules: list[ContentRule], rule_id: str,
                term: str, *, from_file: bool) -> Overrides:
    """``term`` taken out of the server's rule ``rule_id``. A rule only /mod made goes with its last term;
    one the file made stays, empty, so that it stays emptied after the file is read again."""
    term = term.strip()
    rule = next((found for found in server_rules if found.id == rule_id), None)
    if rule is None or not any(_same(term, word) for word in rule.words):
        if any(found.id == rule_id and any(_same(term, word) for word in found.words) for found in bot_rules):
            raise InvalidSetting(f"that term is in rule {rule_id} of every server (config.yaml's content.rules); "
                                 "only the bot's operator can remove it there.")
        raise InvalidSetting(f"this server's rule {rule_id} has no such term; /mod blocklist list shows them.")
    words = [word for word in rule.words if not _same(term, word)]
    if not words and not rule.patterns and not from_file:
        return _with_rule(overrides, None, rule_id)
    return _with_rule(overrides, {**rule.model_dump(mode="json"), "words": words}, rule_id)


def set_safety(overrides: Overrides, key: str, mode: str | None) -> Overrides:
    """This server's ``safety.<key>``: a mode, or None to follow the file again."""
    edited = copy.deepcopy(overrides)
    safety = dict(edited.get("safety") or {})
    if mode is None:
        safety.pop(key, None)
    else:
        safety[key] = mode
    edited["safety"] = safety
    if not safety:
        del edited["safety"]
    return edited
