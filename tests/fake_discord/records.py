"""What the fake records: requests, messages (with attachment bytes) and interactions.

Tests assert on these objects; the REST handlers mutate them.  Messages keep every version
so that progress edits can be asserted after the fact without timing anything.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from typing import Any

from .models import JSON, iso_now

# Message flags (Discord's MessageFlags).
SUPPRESS_EMBEDS = 1 << 2
EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_NOTIFICATIONS = 1 << 12
IS_COMPONENTS_V2 = 1 << 15
# Flags a bot may set when it creates a message; others are ignored like Discord does.
SETTABLE_FLAGS = SUPPRESS_EMBEDS | EPHEMERAL | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2
EDITABLE_FLAGS = SUPPRESS_EMBEDS | IS_COMPONENTS_V2

# Interaction types and callback types, named for readability in handlers and tests.
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE = 4, 5, 6, 7
AUTOCOMPLETE_RESULT, MODAL = 8, 9


@dataclass
class UploadedFile:
    """One ``files[N]`` part of a multipart request, as received."""

    field: str
    filename: str
    content_type: str | None
    data: bytes

    @property
    def index(self) -> int | None:
        # "files[3]" -> 3, which is what attachments[].id refers to.
        if self.field.startswith("files[") and self.field.endswith("]"):
            inner = self.field[6:-1]
            return int(inner) if inner.isdigit() else None
        return None


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    json: Any  # JSON body or the parsed payload_json; None when there was no body
    files: list[UploadedFile]
    route: str | None = None  # the OpenAPI path template it matched
    status: int | None = None
    response: Any = None

    def __repr__(self) -> str:
        return f"<{self.method} {self.path} -> {self.status}>"


@dataclass
class StoredAttachment:
    id: int
    filename: str
    data: bytes
    content_type: str  # what Discord would report (guessed from the filename, like Discord)
    url: str
    sent_content_type: str | None = None  # the part's own header (discord.py sends octet-stream)
    description: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    def to_json(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            data["description"] = self.description
        return data


def guess_content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


@dataclass
class MessageVersion:
    """A snapshot of a message after a create or edit."""

    content: str
    embeds: list[JSON]
    components: list[JSON]
    attachment_names: list[str]
    flags: int


@dataclass
class StoredMessage:
    id: int
    channel_id: int
    guild_id: int | None
    author: JSON
    content: str = ""
    embeds: list[JSON] = field(default_factory=list)
    components: list[JSON] = field(default_factory=list)
    attachments: list[StoredAttachment] = field(default_factory=list)
    flags: int = 0
    tts: bool = False
    type: int = 0
    # The last allowed_mentions the bot sent for this message, and whether it sent one at all.
    allowed_mentions: JSON | None = None
    allowed_mentions_sent: bool = False
    message_reference: JSON | None = None
    interaction_id: int | None = None  # the interaction whose response/followup this is
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_metadata: JSON | None = None
    timestamp: str = field(default_factory=iso_now)
    edited_timestamp: str | None = None
    deleted: bool = False
    versions: list[MessageVersion] = field(default_factory=list)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    @property
    def contents(self) -> list[str]:
        """Content of every version, oldest first (e.g. progress edits)."""
        return [v.content for v in self.versions]

    def snapshot(self) -> None:
        self.versions.append(
            MessageVersion(
                self.content,
                list(self.embeds),
                list(self.components),
                [a.filename for a in self.attachments],
                self.flags,
            )
        )

    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in iter_components(self.components) if "custom_id" in c]

    def find_component(self, custom_id: str) -> JSON | None:
        for comp in iter_components(self.components):
            if comp.get("custom_id") == custom_id:
                return comp
        return None

    def attachment(self, filename: str) -> StoredAttachment:
        for att in self.attachments:
            if att.filename == filename:
                return att
        raise KeyError(f"message {self.id} has no attachment {filename!r}: {[a.filename for a in self.attachments]}")

    def to_json(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "type": self.type,
            "content": self.content,
            "author": self.author,
            "attachments": [a.to_json() for a in self.attachments],
            "embeds": [{"type": "rich", **e} for e in self.embeds],
            "components": self.components,
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": self.tts,
            "timestamp": self.timestamp,
            "edited_timestamp": self.edited_timestamp,
            "flags": self.flags,
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        if self.application_id is not None:
            data["application_id"] = str(self.application_id)
        if self.interaction_metadata is not None:
            data["interaction_metadata"] = self.interaction_metadata
        if self.message_reference is not None:
            data["message_reference"] = self.message_reference
        return data

    def __repr__(self) -> str:
        return (
            f"<StoredMessage id={self.id} channel={self.channel_id} flags={self.flags} "
            f"content={self.content[:60]!r} attachments={[a.filename for a in self.attachments]}>"
        )


def iter_components(components: list[JSON]) -> list[JSON]:
    """Every component, depth first (action rows, sections, containers, labels)."""
    out: list[JSON] = []
    for comp in components:
        out.append(comp)
        out.extend(iter_components(comp.get("components") or []))
        for key in ("accessory", "component"):
            if isinstance(comp.get(key), dict):
                out.extend(iter_components([comp[key]]))
    return out


@dataclass
class AllowedMentionsRecord:
    """allowed_mentions as sent with one message-creating or -editing request."""

    method: str
    path: str
    message_id: int | None
    sent: bool
    value: JSON | None


@dataclass
class InteractionRecord:
    id: int
    token: str
    type: int
    payload: JSON  # the INTERACTION_CREATE data the fake dispatched
    guild_id: int | None
    channel_id: int
    user_id: int
    created_at: float  # loop.time() when dispatched, for the 3 s first-response deadline
    attachment_size_limit: int
    # The fake's clock (epoch seconds) when dispatched; the token expires TOKEN_LIFETIME_S later.
    dispatched_at: float = 0.0
    source_message_id: int | None = None  # for component/modal interactions on a message
    modal_of: int | None = None  # for a modal submit: the interaction the modal answered
    expired: bool = False  # set by InteractionHandle.expire(); age also expires the token
    response_type: int | None = None
    response_data: JSON | None = None
    original_message_id: int | None = None  # what @original refers to
    followup_ids: list[int] = field(default_factory=list)
    # Keys of callbacks and webhook calls (for diagnostics).
    calls: list[str] = field(default_factory=list)

    @property
    def responded(self) -> bool:
        return self.response_type is not None

    @property
    def autocomplete_choices(self) -> list[JSON] | None:
        if self.response_type != AUTOCOMPLETE_RESULT or self.response_data is None:
            return None
        return list(self.response_data.get("choices") or [])

    @property
    def modal(self) -> JSON | None:
        return self.response_data if self.response_type == MODAL else None
