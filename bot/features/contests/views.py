"""The contests feature's buttons and its one modal.

Buttons are persistent ``DynamicItem``s (``custom_ids``): a click after a restart still reaches this feature's
cog (``ContestCog.on_contest_button``), which reads what the id names from the database. The modal (Try again,
with the prompt to edit) lives in memory while it is open, as Discord modals do.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import discord
import discord.ext.commands

from bot.discord_ui.replies import reply_error
from bot.features.contests.custom_ids import Action, encode, template
from bot.features.contests.records import Entry
from generation.request import MAX_PROMPT_CHARS

COG_NAME = "Contests"
PROMPT_INPUT_ID = "contest:prompt"


@runtime_checkable
class ButtonTarget(Protocol):
    """What ``ContestCog`` offers its buttons (a protocol: the cog module imports this one)."""

    async def on_contest_button(self, interaction: discord.Interaction[Any], action: Action, target: str,
                                index: int | None) -> None: ...


def _cog(interaction: discord.Interaction[Any]) -> ButtonTarget | None:
    client = interaction.client
    cog = client.get_cog(COG_NAME) if isinstance(client, discord.ext.commands.Bot) else None
    return cog if isinstance(cog, ButtonTarget) else None


class _ContestButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"contest:(?!)"):
    """Shared behaviour; the base template matches nothing, each subclass sets its own."""

    action: Action

    def __init__(self, target: str, index: int | None = None, *, label: str | None = None, emoji: str | None = None,
                 style: discord.ButtonStyle = discord.ButtonStyle.secondary, row: int | None = None) -> None:
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=style, row=row,
                                           custom_id=encode(self.action, target, index)))
        self.target = target
        self.index = index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str]) -> _ContestButton:
        index = match.groupdict().get("index")
        return cls(match["target"], int(index) if index is not None else None)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        cog = _cog(interaction)
        if cog is None:  # the feature is unloading (shutdown): answer, never leave the click hanging
            await reply_error(interaction, RuntimeError("a contest button was clicked while contests are not loaded"))
            return
        await cog.on_contest_button(interaction, self.action, self.target, self.index)


class SubmitButton(_ContestButton, template=template("submit")):
    action = "submit"


class RetryButton(_ContestButton, template=template("retry")):
    action = "retry"


class VoteButton(_ContestButton, template=template("vote")):
    action = "vote"


class MyVoteButton(_ContestButton, template=template("myvote")):
    action = "myvote"


class WithdrawButton(_ContestButton, template=template("withdraw")):
    action = "withdraw"


DYNAMIC_ITEMS: tuple[type[_ContestButton], ...] = (SubmitButton, RetryButton, VoteButton, MyVoteButton,
                                                   WithdrawButton)


def try_view(job_id: str, count: int) -> discord.ui.View:
    """Under a member's private images: Submit for each, and Try again."""
    view = discord.ui.View(timeout=None)
    for index in range(count):
        label = f"Submit {index + 1}" if count > 1 else "Submit"
        view.add_item(SubmitButton(job_id, index, label=label, style=discord.ButtonStyle.success))
    view.add_item(RetryButton(job_id, label="Try again", emoji="🔄"))
    return view


def vote_view(entry: Entry) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(VoteButton(entry.id, label=f"Vote for {entry.number}", emoji="🗳",
                             style=discord.ButtonStyle.primary))
    return view


def gallery_end_view(contest_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(MyVoteButton(contest_id, label="My vote"))
    return view


def entries_view(entries: Sequence[Entry]) -> discord.ui.View:
    """Withdraw, one button per entry of the member's (in the order the message lists them)."""
    view = discord.ui.View(timeout=None)
    for position, entry in enumerate(entries, start=1):
        view.add_item(WithdrawButton(entry.id, label=f"Withdraw {position}", style=discord.ButtonStyle.danger))
    return view


class PromptModal(discord.ui.Modal):
    """Try again: the last prompt, ready to edit; submitting it makes a new try under the same rules."""

    def __init__(self, prompt: str,
                 on_submit: Callable[[discord.Interaction[Any], str], Awaitable[None]]) -> None:
        super().__init__(title="Try again", timeout=900)
        self._on_submit = on_submit
        self.prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
            label="Prompt", style=discord.TextStyle.paragraph, default=prompt[:MAX_PROMPT_CHARS],
            max_length=MAX_PROMPT_CHARS, custom_id=PROMPT_INPUT_ID)
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await self._on_submit(interaction, self.prompt.value)
        except Exception as exc:
            await reply_error(interaction, exc)
