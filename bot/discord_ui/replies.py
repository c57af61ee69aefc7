"""One place that turns the project's exceptions into ephemeral replies.

Expected errors (the ImagineError tree) say what was wrong and what is allowed. Anything else is
logged with a short reference id that the user also sees, and the bot keeps serving.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from bot.core.errors import (
    Banned,
    ChannelNotAllowed,
    ContentBlocked,
    NotPermitted,
    PromptTooLong,
    Refused,
    new_reference,
    shown_to_requester,
)
from bot.discord_ui.interactions import NO_MENTIONS
from bot.discord_ui.texts import problems_text
from generation.errors import ImagineError, InvalidRequest

_log = logging.getLogger(__name__)


def error_text(exc: BaseException) -> str:
    if isinstance(exc, InvalidRequest):
        return problems_text(exc.problems)  # escaped there, once
    if isinstance(exc, (NotPermitted, ChannelNotAllowed, Banned, ContentBlocked, PromptTooLong)):  # waiting won't help
        return f"🚫 {exc}"
    if isinstance(exc, Refused):  # each says when to try again
        return f"⏳ {exc}"
    if isinstance(exc, ImagineError) and shown_to_requester(exc):
        return str(exc)[:2000]
    # Unexpected, or text for operators (a model's path, exception text): the detail goes to the log only.
    reference = new_reference()
    _log.error("unexpected error (ref %s)", reference, exc_info=exc)
    return f"Something went wrong on our side (reference `{reference}`). The bot is still running; please try again."


async def reply_error(interaction: discord.Interaction[Any], exc: BaseException) -> None:
    """Answer ``interaction`` with an ephemeral explanation of ``exc``, however far it got."""
    if isinstance(exc, app_commands.CommandInvokeError):
        exc = exc.original
    text = error_text(exc)
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        else:
            await interaction.response.send_message(text, ephemeral=True,
                                                    allowed_mentions=NO_MENTIONS)
    except discord.HTTPException as http_exc:
        _log.warning("could not send an error reply: %s", http_exc)
