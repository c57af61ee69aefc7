"""The tally of a closed round: pure, so that the rule members read in the README is the rule that runs.

- Entries are ranked by votes, most first.
- **Tie-break:** among entries with as many votes, the one submitted first ranks higher (then the lower
  gallery number, which only matters for two entries stored in the same instant). It is fixed before
  anyone votes and cannot be swayed by voting; it rewards entering early, which every member could do.
- The podium has three places. Each member takes at most one of them, with their best entry (a member
  with five entries cannot fill the podium alone); an entry without a vote never places.
- Points: 3 for first, 2 for second, 1 for third; they add up per server on the leaderboard.

Withdrawn and disqualified entries take no part (votes for a disqualified entry were removed with it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.features.contests.records import Entry

POINTS: tuple[int, ...] = (3, 2, 1)  # for podium places 1, 2 and 3


@dataclass(frozen=True)
class Tallied:
    entry: Entry
    rank: int
    votes: int
    place: int | None
    points: int


def rank_key(entry: Entry, votes: Mapping[str, int]) -> tuple[int, float, int, str]:
    return (-votes.get(entry.id, 0), entry.submitted_at.timestamp(), entry.number or 0, entry.id)


def tally(entries: Sequence[Entry], votes: Mapping[str, int]) -> list[Tallied]:
    """Every active entry in rank order, with its podium place and points (see the module's rules)."""
    ranked = sorted((entry for entry in entries if entry.active), key=lambda entry: rank_key(entry, votes))
    placed_users: set[int] = set()
    result: list[Tallied] = []
    for rank, entry in enumerate(ranked, start=1):
        count = votes.get(entry.id, 0)
        place: int | None = None
        if count > 0 and entry.user_id not in placed_users and len(placed_users) < len(POINTS):
            placed_users.add(entry.user_id)
            place = len(placed_users)
        result.append(Tallied(entry, rank, count, place, POINTS[place - 1] if place else 0))
    return result
