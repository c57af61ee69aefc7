"""Persistent button custom ids: ``imagine:<action>:<job_id>[:<index>]``.

The id names the stored job, so a button keeps working after a restart: the handler finds the job
by its id (queue or storage) instead of relying on in-memory view state. ``index`` is 0-based
(button U1 is index 0).
The parser is strict: anything that is not exactly one of these shapes is rejected.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal, cast

from generation.request import MAX_IMAGES_PER_REQUEST

_log = logging.getLogger(__name__)

PREFIX = "imagine"
MAX_CUSTOM_ID_CHARS = 100  # Discord's limit
Action = Literal["u", "v", "reroll", "delete", "cancel"]
INDEXED_ACTIONS: tuple[Action, ...] = ("u", "v")
JOB_ACTIONS: tuple[Action, ...] = ("reroll", "delete", "cancel")
_JOB_ID = r"[0-9a-f]{32}"  # uuid4().hex
_INDEX = f"[0-{MAX_IMAGES_PER_REQUEST - 1}]"
_PATTERN = re.compile(
    rf"{PREFIX}:(?:(?P<indexed>u|v):(?P<job1>{_JOB_ID}):(?P<index>{_INDEX})"
    rf"|(?P<plain>reroll|delete|cancel):(?P<job2>{_JOB_ID}))"
)


@dataclass(frozen=True)
class ButtonId:
    """What a button does (``action``) to which stored job, and for U/V which image."""

    action: Action
    job_id: str
    index: int | None = None

    def encode(self) -> str:
        return encode_custom_id(self.action, self.job_id, self.index)


def template(action: Action) -> str:
    """A regex (with named groups ``job_id`` and, for U/V, ``index``) for one action.

    Suits ``discord.ui.DynamicItem[...]``'s ``template=`` argument, which is matched in full.
    """
    if action in INDEXED_ACTIONS:
        return rf"{PREFIX}:{action}:(?P<job_id>{_JOB_ID}):(?P<index>{_INDEX})"
    if action in JOB_ACTIONS:
        return rf"{PREFIX}:{action}:(?P<job_id>{_JOB_ID})"
    raise ValueError(f"unknown button action {action!r}; allowed: {', '.join(INDEXED_ACTIONS + JOB_ACTIONS)}")


def encode_custom_id(action: Action, job_id: str, index: int | None = None) -> str:
    """The custom id for a button; ``ValueError`` when the parts could not be decoded back."""
    if action in INDEXED_ACTIONS:
        if index is None:
            raise ValueError(f"button {action!r} needs an image index 0 to {MAX_IMAGES_PER_REQUEST - 1}")
        custom_id = f"{PREFIX}:{action}:{job_id}:{index}"
    elif action in JOB_ACTIONS:
        if index is not None:
            raise ValueError(f"button {action!r} takes no image index")
        custom_id = f"{PREFIX}:{action}:{job_id}"
    else:
        raise ValueError(f"unknown button action {action!r}; allowed: {', '.join(INDEXED_ACTIONS + JOB_ACTIONS)}")
    if decode_custom_id(custom_id) is None:
        raise ValueError(f"cannot encode {custom_id!r}: job id must be 32 lowercase hex digits, index 0 to 3")
    return custom_id


def decode_custom_id(custom_id: str) -> ButtonId | None:
    """The button a custom id names, or ``None`` when it is not exactly one of ours."""
    if len(custom_id) > MAX_CUSTOM_ID_CHARS:
        return None
    match = _PATTERN.fullmatch(custom_id)
    if match is None:
        return None
    if match["indexed"]:
        return ButtonId(cast(Action, match["indexed"]), match["job1"], int(match["index"]))
    return ButtonId(cast(Action, match["plain"]), match["job2"])
