"""Persistent button ids of the contests feature: ``contest:<action>:<id>[:<index>]``.

Each id names what it acts on in storage (a try's job, an entry, a round), so a button keeps working after a
restart: discord.py routes the click to the ``DynamicItem`` whose template matches, and the handler reads
everything else from the database. The grammar is strict, and an id is only made if it decodes again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

from generation.request import MAX_IMAGES_PER_REQUEST

PREFIX = "contest"
MAX_CUSTOM_ID_CHARS = 100  # Discord's limit
Action = Literal["submit", "retry", "vote", "myvote", "withdraw"]
ACTIONS: tuple[Action, ...] = ("submit", "retry", "vote", "myvote", "withdraw")
_ID = r"[0-9a-f]{32}"  # uuid4().hex: a job, an entry or a round
_INDEX = f"[0-{MAX_IMAGES_PER_REQUEST - 1}]"
_PATTERN = re.compile(rf"{PREFIX}:(?P<action>submit|retry|vote|myvote|withdraw):(?P<target>{_ID})"
                      rf"(?::(?P<index>{_INDEX}))?")


@dataclass(frozen=True)
class ButtonId:
    action: Action
    target: str
    index: int | None = None


def template(action: Action) -> str:
    """The full-match regex (groups ``target`` and, for submit, ``index``) for ``DynamicItem(template=...)``."""
    if action not in ACTIONS:
        raise ValueError(f"unknown contest button {action!r}; allowed: {', '.join(ACTIONS)}")
    index = rf":(?P<index>{_INDEX})" if action == "submit" else ""
    return rf"{PREFIX}:{action}:(?P<target>{_ID}){index}"


def encode(action: Action, target: str, index: int | None = None) -> str:
    """The custom id of a button; ``ValueError`` when the parts would not decode back to themselves."""
    if (index is None) != (action != "submit"):
        raise ValueError(f"contest button {action!r} {'needs' if action == 'submit' else 'takes no'} image index")
    custom_id = f"{PREFIX}:{action}:{target}" + (f":{index}" if index is not None else "")
    if decode(custom_id) != ButtonId(action, target, index):
        raise ValueError(f"cannot encode {custom_id!r}: the id must be 32 lowercase hex digits, an index 0 to "
                         f"{MAX_IMAGES_PER_REQUEST - 1}")
    return custom_id


def decode(custom_id: str) -> ButtonId | None:
    """The button an id names, or None when it is not exactly one of ours."""
    if len(custom_id) > MAX_CUSTOM_ID_CHARS:
        return None
    match = _PATTERN.fullmatch(custom_id)
    if match is None or (match["index"] is None) != (match["action"] != "submit"):
        return None
    return ButtonId(cast(Action, match["action"]), match["target"],
                    int(match["index"]) if match["index"] is not None else None)
