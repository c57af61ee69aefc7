"""The permissions the bot needs in a channel, and the invite link that asks for exactly those.

``NEEDED`` is the one list: the invite link printed at start-up grants it, the README names it, and
``channel_access`` refuses /imagine (telling the server's admins once) where a channel withholds part of it.
Why each one: the bot sees the channel (View Channel), posts status and result messages there when an
interaction's token has expired, after a restart or a retry (Send Messages, or Send Messages in Threads in
a thread), uploads the images (Attach Files), and reads its own earlier messages back to edit them (Read
Message History). Slash commands need the ``applications.commands`` scope, not a permission.
"""

from __future__ import annotations

from urllib.parse import urlencode

import discord

SCOPES = ("bot", "applications.commands")
AUTHORIZE_URL = "https://discord.com/oauth2/authorize"

NEEDED = discord.Permissions(view_channel=True, send_messages=True, send_messages_in_threads=True,
                             attach_files=True, read_message_history=True)

# Discord's own names for them (the Developer Portal and the server settings show these).
LABELS = {
    "view_channel": "View Channel",
    "send_messages": "Send Messages",
    "send_messages_in_threads": "Send Messages in Threads",
    "attach_files": "Attach Files",
    "read_message_history": "Read Message History",
}
# The invite asks for one more, which no channel needs for /imagine: prompt contests open each round's gallery as a
# thread of its channel (without it, the gallery is posted in the channel itself).
INVITED = discord.Permissions(NEEDED.value | discord.Permissions(create_public_threads=True).value)
INVITE_LABELS = {**LABELS, "create_public_threads": "Create Public Threads"}


def invite_url(application_id: int, permissions: discord.Permissions | int = INVITED) -> str:
    """The link a server admin opens to add the bot with ``SCOPES`` and ``permissions`` (an integer is the
    permissions bit field, as Discord writes it)."""
    value = permissions.value if isinstance(permissions, discord.Permissions) else int(permissions)
    query = urlencode({"client_id": application_id, "scope": " ".join(SCOPES), "permissions": value})
    return f"{AUTHORIZE_URL}?{query}"


def needed_in(channel: object) -> discord.Permissions:
    """What the bot needs where a command was used: in a thread it posts with Send Messages in Threads,
    elsewhere with Send Messages; each place needs only its own."""
    needed = discord.Permissions(NEEDED.value)
    if isinstance(channel, discord.Thread):
        needed.send_messages = False
    else:
        needed.send_messages_in_threads = False
    return needed


def missing_labels(have: discord.Permissions, needed: discord.Permissions) -> list[str]:
    """The names of what ``needed`` asks for and ``have`` lacks, in ``LABELS`` order. Administrator has all."""
    if have.administrator:
        return []
    return [label for flag, label in LABELS.items() if getattr(needed, flag) and not getattr(have, flag)]
