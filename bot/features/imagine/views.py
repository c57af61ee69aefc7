"""Persistent buttons. Each custom id names the stored job, so buttons on old messages keep working
after a restart: discord.py routes a click to the DynamicItem whose template matches, and the
button hands it to this feature's cog (``ImagineCog.on_button``), which asks the imagine service."""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

import discord
import discord.ext.commands

from bot.discord_ui.custom_ids import Action, encode_custom_id, template
from bot.discord_ui.replies import reply_error

COG_NAME = "Imagine"


@runtime_checkable
class ButtonTarget(Protocol):
    """What ``ImagineCog`` offers its buttons (a protocol: the cog module imports this one)."""

    async def on_button(self, interaction: discord.Interaction[Any], action: Action, job_id: str,
                        index: int | None) -> None: ...


def _imagine_cog(interaction: discord.Interaction[Any]) -> ButtonTarget | None:
    client = interaction.client
    cog = client.get_cog(COG_NAME) if isinstance(client, discord.ext.commands.Bot) else None
    return cog if isinstance(cog, ButtonTarget) else None


class _JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"imagine:(?!)"):
    """Shared behaviour; the base template matches nothing, each subclass sets its own."""

    action: Action

    def __init__(self, job_id: str, index: int | None = None, *, label: str | None = None,
                 emoji: str | None = None, style: discord.ButtonStyle = discord.ButtonStyle.secondary,
                 row: int | None = None) -> None:
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=style, row=row,
                                           custom_id=encode_custom_id(self.action, job_id, index)))
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str]) -> _JobButton:
        index = match.groupdict().get("index")
        return cls(match["job_id"], int(index) if index is not None else None)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        cog = _imagine_cog(interaction)
        if cog is None:  # the feature is unloading (shutdown) or failed to load: answer, never leave it hanging
            await reply_error(interaction, RuntimeError("an /imagine button was clicked while /imagine is not loaded"))
            return
        await cog.on_button(interaction, self.action, self.job_id, self.index)


class UpscaleButton(_JobButton, template=template("u")):
    action = "u"


class VariationButton(_JobButton, template=template("v")):
    action = "v"


class RerollButton(_JobButton, template=template("reroll")):
    action = "reroll"


class DeleteButton(_JobButton, template=template("delete")):
    action = "delete"


class CancelButton(_JobButton, template=template("cancel")):
    action = "cancel"


DYNAMIC_ITEMS: tuple[type[_JobButton], ...] = (UpscaleButton, VariationButton, RerollButton, DeleteButton, CancelButton)


class ImagineViews:
    """The ``JobViews`` the presenter puts under /imagine's status and result messages."""

    def status_view(self, job_id: str) -> discord.ui.View:
        return status_view(job_id)

    def result_view(self, job_id: str, count: int) -> discord.ui.View:
        return result_view(job_id, count)


def status_view(job_id: str) -> discord.ui.View:
    """The ✖ cancel button shown while a job is queued or running."""
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id, label="Cancel", emoji="✖", style=discord.ButtonStyle.danger))
    return view


def result_view(job_id: str, count: int, *, variations: bool = True) -> discord.ui.View:
    """U1–Un, V1–Vn, reroll and delete under a finished job."""
    view = discord.ui.View(timeout=None)
    for index in range(count):
        view.add_item(UpscaleButton(job_id, index, label=f"U{index + 1}", row=0))
    if variations:
        for index in range(count):
            view.add_item(VariationButton(job_id, index, label=f"V{index + 1}", row=1))
    view.add_item(RerollButton(job_id, emoji="🔄", row=2))
    view.add_item(DeleteButton(job_id, emoji="🗑", row=2))
    return view
