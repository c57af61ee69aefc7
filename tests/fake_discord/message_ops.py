"""Create and edit stored messages from request bodies, the way Discord applies them.

Shared by channel-message, webhook and interaction-callback routes.  Attachment rules:
``attachments[].id`` is either an existing attachment's id (keep it) or the N of an
uploaded ``files[N]`` (add it); uploads not referenced are appended, as Discord does.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from .models import JSON
from .records import (
    EDITABLE_FLAGS,
    LOADING,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    SETTABLE_FLAGS,
    InteractionRecord,
    StoredAttachment,
    StoredMessage,
    UploadedFile,
    iter_components,
)
from .rest import DiscordHTTPError
from .state import FakeState


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def resolve_attachments(
    state: FakeState, body: JSON, uploads: list[UploadedFile], existing: list[StoredAttachment]
) -> list[StoredAttachment]:
    used: set[int] = set()
    result: list[StoredAttachment] = []
    if "attachments" in body and body["attachments"] is not None:
        by_index = {u.index: u for u in uploads if u.index is not None}
        kept = {a.id: a for a in existing}
        for i, item in enumerate(body["attachments"]):
            ref = _as_int(item.get("id"))
            if ref in kept:
                att = kept[ref]
                if item.get("description") is not None:
                    att.description = item["description"]
                result.append(att)
            elif ref in by_index:
                upload = by_index[ref]
                used.add(id(upload))
                result.append(state.store_upload(upload, item.get("description"), item.get("filename")))
            else:
                raise DiscordHTTPError(
                    400,
                    50035,
                    "Invalid Form Body",
                    errors={
                        "attachments": {
                            str(i): {"_errors": [{"code": "ATTACHMENT_NOT_FOUND", "message": "Unknown attachment"}]}
                        }
                    },
                    fail=f"attachments[{i}].id={item.get('id')!r} matches neither an upload nor a kept attachment",
                )
    else:
        result = list(existing)
    result += [state.store_upload(u) for u in uploads if id(u) not in used]
    return result


def number_components(components: list[JSON] | None) -> list[JSON]:
    """Copy of ``components`` as Discord stores them: numeric ``id`` filled in (depth first, from 1),
    and a unicode emoji's null ``id`` dropped (Discord answers ``{"name": "🗑"}``, never ``"id": null``)."""
    copied: list[JSON] = copy.deepcopy(list(components or []))
    taken = {c["id"] for c in iter_components(copied) if isinstance(c.get("id"), int)}
    counter = itertools.count(1)
    for comp in iter_components(copied):
        if not isinstance(comp.get("id"), int):
            comp["id"] = next(n for n in counter if n not in taken)
        for emoji in [comp.get("emoji"), *(o.get("emoji") for o in comp.get("options") or [] if isinstance(o, dict))]:
            if isinstance(emoji, dict) and emoji.get("id", 0) is None:
                del emoji["id"]
    return copied


def create_message(
    state: FakeState,
    *,
    channel_id: int,
    guild_id: int | None,
    body: JSON | None,
    uploads: list[UploadedFile],
    interaction: InteractionRecord | None = None,
    msg_type: int = 0,
    extra_flags: int = 0,
) -> StoredMessage:
    body = body or {}
    message = StoredMessage(
        id=state.new_id(),
        channel_id=channel_id,
        guild_id=guild_id,
        author=state.bot_user.to_json(),
        content=body.get("content") or "",
        embeds=list(body.get("embeds") or []),
        components=number_components(body.get("components")),
        flags=(_as_int(body.get("flags")) or 0) & SETTABLE_FLAGS | extra_flags,
        tts=bool(body.get("tts")),
        type=msg_type,
        allowed_mentions=body.get("allowed_mentions"),
        allowed_mentions_sent="allowed_mentions" in body,
        message_reference=body.get("message_reference"),
        timestamp=state.iso_now(),
    )
    message.attachments = resolve_attachments(state, body, uploads, [])
    if interaction is not None:
        message.interaction_id = interaction.id
        message.webhook_id = state.application_id
        message.application_id = state.application_id
        message.interaction_metadata = interaction_metadata(state, interaction)
    return state.add_message(message)


def interaction_metadata(state: FakeState, interaction: InteractionRecord) -> JSON:
    """A message's ``interaction_metadata``: what each interaction type requires in the spec."""
    data: JSON = {
        "id": str(interaction.id),
        "type": interaction.type,
        "user": state.user(interaction.user_id).to_json(),
        "authorizing_integration_owners": interaction.payload.get("authorizing_integration_owners", {}),
    }
    if interaction.type == MESSAGE_COMPONENT and interaction.source_message_id is not None:
        data["interacted_message_id"] = str(interaction.source_message_id)
    if interaction.type == MODAL_SUBMIT and interaction.modal_of in state.interactions:
        data["triggering_interaction_metadata"] = interaction_metadata(state, state.interactions[interaction.modal_of])
    return data


def edit_message(state: FakeState, message: StoredMessage, body: JSON | None, uploads: list[UploadedFile]) -> None:
    body = body or {}
    if "content" in body:
        message.content = body["content"] or ""
    if "embeds" in body:
        message.embeds = list(body["embeds"] or [])
    if "components" in body:
        message.components = number_components(body["components"])
    flags = message.flags & ~LOADING  # an edit ends the "thinking..." state
    if body.get("flags") is not None:
        flags = (flags & ~EDITABLE_FLAGS) | (_as_int(body["flags"]) or 0) & EDITABLE_FLAGS
    message.flags = flags
    if "allowed_mentions" in body:
        message.allowed_mentions = body["allowed_mentions"]
        message.allowed_mentions_sent = True
    message.attachments = resolve_attachments(state, body, uploads, message.attachments)
    if message.versions and message.versions[-1].flags & LOADING:
        message.edited_timestamp = None  # the first edit of a deferred response isn't an "edit"
    else:
        message.edited_timestamp = state.iso_now()
    state.message_edited(message)
