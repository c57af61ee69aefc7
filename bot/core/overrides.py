"""Per-server settings stored by moderators (``/mod``), layered over config.yaml.

An override is a mapping in the shape of ``guilds.<id>`` in the file (JSON-ready: role ids are strings),
holding only what a moderator changed. It is merged onto the file's entry for that server and the
result is validated as ``GuildConfig`` by the same path as the file (``validate_section``), so a bad
value gets the file's message, naming the key as the file would: ``guilds.<id>.limits.<key>``.

How an override meets the file (the file is the default, the override wins):

- ``limits``, ``content`` and ``safety`` merge key by key: an override names the keys it sets, the
  file's other keys stay (a bucket is one key: its value replaces the file's bucket whole);
- ``roles`` merges role by role, and within a role key by key;
- ``content.rules`` merges by rule ``id``: an override's rule replaces the file's rule of that id;
- any other key (``channels``, ``banned_users``...) replaces the file's value.

Keeping only the changed keys (not a copy of the file) is what lets a later edit of the file still
reach every key a moderator did not touch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from generation.configfile import validate_section

KEYWISE_SECTIONS = ("limits", "content", "safety")
Overrides = dict[str, Any]


def file_entry(guild: Any) -> Overrides:
    """What the file wrote for a server (a ``GuildConfig``, or None): only the keys it set, JSON-ready, so
    that validating it again gives the same config, down to which limit keys are set (``resolve_limits``)."""
    if guild is None:
        return {}
    dumped: Overrides = guild.model_dump(mode="json", exclude_unset=True)
    return dumped


def _keywise(base: Any, over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base) if isinstance(base, Mapping) else {}
    merged.update(over)
    return merged


def _rules(base: Any, over: Any) -> Any:
    if not isinstance(base, list) or not isinstance(over, list):
        return over  # not lists: the override's value is what gets validated (and refused)
    replaced = {rule.get("id") for rule in over if isinstance(rule, Mapping)}
    return [rule for rule in base if not (isinstance(rule, Mapping) and rule.get("id") in replaced)] + list(over)


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> Overrides:
    """The file's entry for a server (``base``) with a stored override on top (see the module docstring)."""
    merged: Overrides = copy.deepcopy(dict(base))
    for key, value in over.items():
        old = merged.get(key)
        if key in KEYWISE_SECTIONS and isinstance(value, Mapping):
            section = _keywise(old, value)
            if key == "content" and "rules" in value:
                section["rules"] = _rules(old.get("rules") if isinstance(old, Mapping) else None, value["rules"])
            merged[key] = copy.deepcopy(section)
        elif key == "roles" and isinstance(value, Mapping):
            roles = dict(old) if isinstance(old, Mapping) else {}
            for role, limits in value.items():
                previous = roles.get(str(role), roles.get(role))
                roles.pop(role, None)
                roles[str(role)] = _keywise(previous, limits) if isinstance(limits, Mapping) else limits
            merged[key] = copy.deepcopy(roles)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def validate_guild(model: type[Any], guild_id: int, mapping: Mapping[str, Any], source: str) -> Any:
    """``mapping`` validated as the server entry ``guilds.<guild_id>`` of a file named ``source``; raises the
    file's ConfigError (the same key path and message, without a line: an override has none)."""
    return validate_section(model, dict(mapping), source, {}, prefix=("guilds", guild_id))
