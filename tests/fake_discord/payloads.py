"""INTERACTION_CREATE payloads: what a Discord client sends when a user acts.

Option values are typed from the command definition the bot registered, so a test writes
``options={"prompt": "a cat", "steps": 4}`` and the fake sends what Discord would.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .models import JSON, FakeChannel, FakeGuild, FakeRole, FakeUser
from .records import MESSAGE_COMPONENT, MODAL_SUBMIT, InteractionRecord, StoredMessage, guess_content_type
from .state import FakeRejected

if TYPE_CHECKING:
    from .server import FakeDiscord

SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11
GUILD_INSTALL, GUILD_CONTEXT = "0", 0
SELECT_TYPES = (3, 5, 6, 7, 8)  # string, user, role, mentionable, channel selects


@dataclass
class FakeAttachment:
    """A file a user "uploaded" for an attachment option; served by the fake at ``url``."""

    id: int
    filename: str
    data: bytes
    url: str
    content_type: str

    def to_json(self) -> JSON:
        return {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data),
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
            "ephemeral": True,
        }


class Resolved:
    """Collects the ``resolved`` objects that option values refer to."""

    def __init__(self, fake: FakeDiscord, guild: FakeGuild | None) -> None:
        self.fake, self.guild = fake, guild
        self.data: dict[str, dict[str, JSON]] = {}

    def add(self, kind: str, key: int, value: JSON) -> str:
        self.data.setdefault(kind, {})[str(key)] = value
        return str(key)

    def user(self, value: Any) -> str:
        user = self.fake.user(value)
        member = self.guild.member(user) if self.guild else None
        if member is not None and self.guild is not None:
            data = member.to_json(permissions=self.guild.permissions_of(member))
            data.pop("user")
            self.add("members", user.id, data)
        return self.add("users", user.id, user.to_json())

    def role(self, value: Any) -> str:
        role = self.guild.role(value) if self.guild else None
        if role is None:
            raise LookupError(f"no role {value!r} in {self.guild}")
        return self.add("roles", role.id, role.to_json())

    def channel(self, value: Any) -> str:
        channel = self.fake.channel(value)
        perms = self.fake.state.bot_permissions(self.guild or self.fake.guild(), channel)
        data = {**channel.to_json(), "permissions": str(perms)}
        return self.add("channels", channel.id, data)

    def attachment(self, value: Any) -> str:
        if not isinstance(value, FakeAttachment):
            data, filename = value  # (bytes, filename)
            value = self.fake.serve_attachment(data, filename)
        return self.add("attachments", value.id, value.to_json())

    def mentionable(self, value: Any) -> str:
        if isinstance(value, FakeRole) or (self.guild and not isinstance(value, FakeUser) and self.guild.role(value)):
            return self.role(value)
        return self.user(value)


_CONVERT: dict[int, Callable[[Resolved, Any], Any]] = {
    STRING: lambda r, v: str(v),
    INTEGER: lambda r, v: int(v),
    NUMBER: lambda r, v: float(v),
    BOOLEAN: lambda r, v: bool(v),
    USER: Resolved.user,
    ROLE: Resolved.role,
    CHANNEL: Resolved.channel,
    ATTACHMENT: Resolved.attachment,
    MENTIONABLE: Resolved.mentionable,
}


def build_options(
    definitions: list[JSON], values: Mapping[str, Any], resolved: Resolved, *, focused: str | None = None
) -> list[JSON]:
    by_name = {d["name"]: d for d in definitions}
    unknown = set(values) - set(by_name)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; the command has {sorted(by_name)}")
    missing = [d["name"] for d in definitions if d.get("required") and d["name"] not in values]
    if missing and focused is None:  # Discord's client won't send a command without them
        raise ValueError(f"required option(s) {missing} not given")
    out = []
    for name, value in values.items():
        kind = by_name[name]["type"]
        if name == focused:  # autocomplete sends the partial text as typed
            out.append({"name": name, "type": kind, "value": value, "focused": True})
        else:
            out.append({"name": name, "type": kind, "value": _CONVERT[kind](resolved, value)})
    return out


def command_data(
    command: JSON, path: list[str], values: Mapping[str, Any], resolved: Resolved, focused: str | None
) -> JSON:
    """``data`` for a chat-input command; ``path`` holds subcommand group/subcommand names."""
    definitions: list[JSON] = command.get("options") or []
    chain: list[JSON] = []
    for name in path:
        match = next(
            (d for d in definitions if d["name"] == name and d["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)), None
        )
        if match is None:
            raise ValueError(f"/{command['name']} has no subcommand {name!r}")
        chain.append({"name": name, "type": match["type"], "options": []})
        definitions = match.get("options") or []
    options = build_options(definitions, values, resolved, focused=focused)
    for link in reversed(chain):
        link["options"], options = options, [link]
    data: JSON = {"id": command["id"], "name": command["name"], "type": command.get("type", 1), "options": options}
    if command.get("guild_id"):
        data["guild_id"] = command["guild_id"]
    if resolved.data:
        data["resolved"] = resolved.data
    return data


def modal_submit_components(modal: JSON, values: Mapping[str, Any]) -> list[JSON]:
    """Mirror the modal the bot sent, filled with ``values`` (custom_id -> str or list)."""

    def fill(comp: JSON) -> JSON:
        cid = str(comp.get("custom_id"))
        if comp["type"] == 4:  # text input; the client pre-fills "value"
            value = values.get(cid, comp.get("value"))
            if value is None and comp.get("required", True):
                raise ValueError(f"modal text input {cid!r} is required")
            return {"type": 4, "custom_id": cid, "value": value or ""}
        return {"type": comp["type"], "custom_id": cid, "values": list(values.get(cid, []))}

    out: list[JSON] = []
    for comp in modal.get("components") or []:
        if comp["type"] == 1:
            out.append({"type": 1, "components": [fill(c) for c in comp.get("components") or []]})
        elif comp["type"] == 18 and isinstance(comp.get("component"), dict):
            out.append({"type": 18, "component": fill(comp["component"])})
    return out


def base_payload(
    fake: FakeDiscord,
    *,
    kind: int,
    guild: FakeGuild | None,
    channel: FakeChannel,
    user: FakeUser,
    size_limit: int | None,
    locale: str = "en-US",
) -> tuple[JSON, InteractionRecord]:
    state = fake.state
    interaction_id, token = state.new_id(), "fake-" + secrets.token_urlsafe(48)
    limit = size_limit if size_limit is not None else state.size_limit(guild.id if guild else None)
    payload: JSON = {
        "id": str(interaction_id),
        "application_id": str(state.application_id),
        "type": kind,
        "token": token,
        "version": 1,
        "attachment_size_limit": limit,
        "locale": locale,
        "entitlements": [],
        "entitlement_sku_ids": [],
        "channel_id": str(channel.id),
        "channel": channel.to_json(),
        "authorizing_integration_owners": {GUILD_INSTALL: str(guild.id)} if guild else {"1": str(user.id)},
        "context": GUILD_CONTEXT if guild else 1,
    }
    if guild is not None:
        member = guild.member(user)
        if member is None:
            raise LookupError(f"{user.username} is not a member of {guild.name}")
        payload.update(
            guild_id=str(guild.id),
            guild_locale=guild.preferred_locale,
            guild={"id": str(guild.id), "locale": guild.preferred_locale, "features": []},
            member=member.to_json(permissions=guild.permissions_of(member)),
            app_permissions=str(state.bot_permissions(guild, channel)),
        )
    else:
        payload.update(user=user.to_json(), app_permissions=str(state.bot_permissions(fake.guild())))
    record = InteractionRecord(
        id=interaction_id,
        token=token,
        type=kind,
        payload=payload,
        guild_id=guild.id if guild else None,
        channel_id=channel.id,
        user_id=user.id,
        created_at=0.0,
        attachment_size_limit=limit,
    )
    return payload, record


def new_fake_attachment(fake: FakeDiscord, data: bytes, filename: str, content_type: str | None) -> FakeAttachment:
    ctype = content_type or guess_content_type(filename)
    att_id, url = fake.state.serve_file(data, filename, ctype)
    return FakeAttachment(att_id, filename, data, url, ctype)


def locate(
    fake: FakeDiscord, guild: Any, channel: Any, user: Any, dm: bool
) -> tuple[FakeGuild | None, FakeChannel, FakeUser]:
    """Where an interaction happens; defaults: first guild, its first text channel, first human."""
    if dm:
        u = fake.user(user) if user is not None else _default_user(fake.guild())
        ch = fake.channel(channel) if channel is not None else fake.state.dm_channel_for(u)
        return None, ch, u
    if guild is None and channel is not None:
        g = fake.state.guild_of_channel(fake.channel(channel).id) or fake.guild()
    else:
        g = fake.guild(guild)
    ch = fake.channel(channel) if channel is not None else next(c for c in g.channels if c.type == 0)
    return g, ch, fake.user(user) if user is not None else _default_user(g)


def _default_user(guild: FakeGuild) -> FakeUser:
    return next(m.user for m in guild.members if not m.user.bot)


def find_command(fake: FakeDiscord, name: str, guild: FakeGuild | None) -> JSON:
    """A registered chat-input command; guild commands shadow global ones, as in the client."""
    candidates = [*(fake.commands(guild) if guild is not None else []), *fake.commands()]
    for command in candidates:
        if command["name"] == name and command.get("type", 1) == 1:
            return command
    known = [c["name"] for c in candidates]
    raise LookupError(f"no slash command {name!r} registered (did the bot sync its tree?); registered: {known}")


def click_payload(
    fake: FakeDiscord, message: StoredMessage | int, custom_id: str, user: Any, values: list[str] | None
) -> tuple[JSON, InteractionRecord]:
    msg = fake.state.messages.get(message.id if isinstance(message, StoredMessage) else message)
    if msg is None:
        raise LookupError(f"no message {message!r} on the fake (only messages the bot sent can be clicked)")
    if msg.deleted:
        raise FakeRejected(
            f"click on {custom_id!r} of message {msg.id}, which was deleted: Discord never delivers a component "
            "interaction for a deleted message (the test drives a click no user could make)"
        )
    component = msg.find_component(custom_id)
    if component is None:
        raise LookupError(f"message {msg.id} has no component {custom_id!r}; it has {msg.custom_ids()}")
    if component.get("disabled"):
        raise ValueError(f"component {custom_id!r} is disabled; a user cannot use it")
    if user is None and msg.interaction_metadata is not None:
        user = int(msg.interaction_metadata["user"]["id"])  # whoever ran the command clicks
    g, ch, u = locate(fake, msg.guild_id, msg.channel_id, user, msg.guild_id is None)
    payload, record = base_payload(fake, kind=MESSAGE_COMPONENT, guild=g, channel=ch, user=u, size_limit=None)
    payload["data"] = {"custom_id": custom_id, "component_type": component["type"]}
    if component["type"] in SELECT_TYPES:
        payload["data"]["values"] = list(values or [])
    payload["message"] = msg.to_json()
    record.source_message_id = msg.id
    return payload, record


def modal_payload(
    fake: FakeDiscord, src: InteractionRecord, values: Mapping[str, Any], user: Any
) -> tuple[JSON, InteractionRecord]:
    modal = src.modal
    if modal is None:
        raise LookupError(f"interaction {src.id} was not answered with a modal (type {src.response_type})")
    g, ch, u = locate(fake, src.guild_id, src.channel_id, user or src.user_id, src.guild_id is None)
    payload, record = base_payload(fake, kind=MODAL_SUBMIT, guild=g, channel=ch, user=u, size_limit=None)
    payload["data"] = {"custom_id": modal["custom_id"], "components": modal_submit_components(modal, values)}
    record.modal_of = src.id
    if src.source_message_id is not None:  # a modal opened from a button carries that message
        payload["message"] = fake.state.messages[src.source_message_id].to_json()
        record.source_message_id = src.source_message_id
    return payload, record
