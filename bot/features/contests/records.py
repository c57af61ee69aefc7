"""Plain, frozen records of the contests feature's rows (never live ORM objects), and a round's phases.

A round is ``submitting`` from its start until ``submit_ends_at``, ``voting`` until ``vote_ends_at``, then
``closed`` (tallied); a moderator may end it early as ``cancelled``. The phase loop moves it on from the
database, so a restart finds every round where it stood.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Phase = Literal["submitting", "voting", "closed", "cancelled"]
OPEN_PHASES: tuple[Phase, ...] = ("submitting", "voting")
PostKind = Literal["announce", "voting_open", "gallery_entry", "gallery_end", "results", "reveal", "no_entries",
                   "cancelled"]
# Where a post goes: the contest channel, or the gallery (its thread, or the channel when no thread could be made).
CHANNEL_POSTS: frozenset[str] = frozenset({"announce", "voting_open", "results", "no_entries", "cancelled"})


@dataclass(frozen=True)
class Rules:
    """What every entry of a round is made with; pinned when the round starts (the model's defaults filled in),
    so a later config change cannot make one entry differ from another."""

    model: str
    steps: int
    width: int
    height: int
    seed: int | None = None  # set: a "same seed" round, where only the prompt differs

    @property
    def same_seed(self) -> bool:
        return self.seed is not None

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "steps": self.steps, "width": self.width, "height": self.height,
                "seed": self.seed}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rules:
        return cls(model=str(data["model"]), steps=int(data["steps"]), width=int(data["width"]),
                   height=int(data["height"]), seed=None if data.get("seed") is None else int(data["seed"]))


@dataclass(frozen=True)
class Contest:
    id: str
    guild_id: int
    number: int
    channel_id: int
    created_by: int
    theme: str
    rules: Rules
    max_entries: int
    blind: bool
    joined_before_voting: bool
    prize: str | None
    phase: Phase
    created_at: datetime
    submit_ends_at: datetime
    vote_ends_at: datetime
    ended_at: datetime | None
    gallery_channel_id: int | None

    @property
    def open(self) -> bool:
        return self.phase in OPEN_PHASES


@dataclass(frozen=True)
class Entry:
    id: str
    contest_id: str
    user_id: int
    job_id: str
    image_index: int
    prompt: str
    seed: int
    number: int | None  # the gallery number, from the moment voting opens
    submitted_at: datetime
    withdrawn_at: datetime | None
    disqualified_at: datetime | None

    @property
    def active(self) -> bool:
        return self.withdrawn_at is None and self.disqualified_at is None


@dataclass(frozen=True)
class Placing:
    """One entry's line in a closed round's tally: its rank (tie-break applied), votes, podium place, points."""

    entry: Entry
    rank: int
    votes: int
    place: int | None
    points: int


@dataclass(frozen=True)
class Post:
    id: str
    contest_id: str
    seq: int
    kind: PostKind
    entry_id: str | None
    part: int
    state: str
    message_id: int | None
    attempts: int

    @property
    def nonce(self) -> str:
        """Discord's nonce (at most 25 characters): a repeated post returns the first message instead of a second."""
        return self.id[:25]

    @property
    def in_channel(self) -> bool:
        return self.kind in CHANNEL_POSTS


@dataclass(frozen=True)
class Standing:
    """A member's line on a server's leaderboard."""

    user_id: int
    points: int
    wins: int
    podiums: int
