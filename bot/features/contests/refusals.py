"""Why a contest action is refused, in members' words. Plain strings, free of Discord and of anything a member
typed (no escaping needed), so the Discord-free rules (``service``, ``store``) raise them directly.
Deadlines are Discord timestamps (``<t:…:R>``), which every member's client shows in their own time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.core.text import plural


def stamp(moment: datetime, style: str = "R") -> str:
    """A Discord timestamp: ``R`` reads "in 2 hours", ``f`` a date and time in the reader's zone."""
    return f"<t:{int(moment.timestamp())}:{style}>"


IN_SERVERS_ONLY = "Contests run in servers: use /contest in a channel of a server."
MODERATORS_ONLY = "Only moderators of this server can do that."
NO_OPEN_CONTEST = "No contest is running in this server right now."
BAD_SIZE = "The size can't be read: write it as WIDTHxHEIGHT, for example 512x512."
ALREADY_ENTERED = "That image is already one of your entries."
NOT_YOUR_IMAGE = "You can only enter images the bot made for you."
NOT_A_CONTEST_IMAGE = ("Only images made with /contest enter for a contest can be entered: no uploads, and no "
                       "/imagine results.")
IMAGE_GONE = "That image is no longer stored; make a new one with /contest enter."
IMAGE_NOT_READY = "That image isn't finished yet."
NOT_YOUR_ENTRY = "You can only withdraw your own entries."
ALREADY_WITHDRAWN = "That entry was already withdrawn."
ENTRY_REMOVED = "That entry was removed by a moderator; vote for another one."
NO_SELF_VOTE = "You can't vote for your own entry."
JOINED_TOO_LATE = "Only members who joined this server before voting opened can vote in this contest."
NOT_YOUR_TRY = "Only the member who made these images can try again with them."
NOT_HERE = "That contest belongs to another server."


def bad_duration(what: str) -> str:
    return (f"The {what} time can't be read: write it like 30m, 2h or 1d12h, "
            "from 1 minute to 14 days.")


def pick_one(numbers: Sequence[int]) -> str:
    listed = ", ".join(f"#{number}" for number in numbers)
    return f"Several contests are running here ({listed}); pick one with the contest option."


def no_such_contest(number: int) -> str:
    return f"This server has no contest #{number}."


def too_many_open(limit: int) -> str:
    return (f"This server already runs {plural(limit, 'contest')} at once, the most it allows; "
            "start another when one ends.")


def too_costly(images: float, allowed: float) -> str:
    return (f"Each try under these rules would take GPU time for about {images:.3g} images of 512×512 at 25 steps, "
            f"and contests here allow at most {allowed:.3g} per try. Use fewer steps or a smaller size.")


def entries_closed(number: int, phase: str, submit_ends_at: datetime) -> str:
    if phase == "voting":
        return f"Entries for contest #{number} are closed: it is voting now."
    if phase == "submitting":
        return f"Entries for contest #{number} closed {stamp(submit_ends_at)}."
    return f"Contest #{number} has ended."


def tries_used(limit: int) -> str:
    return f"You've used all {limit} tries you get in this contest." if limit != 1 else \
        "You've used the one try you get in this contest."


def entry_cap(limit: int) -> str:
    return (f"You already have {limit} of {limit} entries in this contest. Withdraw one with /contest my-entries "
            "to enter another.")


def withdraw_closed(number: int) -> str:
    return f"Entries of contest #{number} can only be withdrawn until entries close."


def voting_not_open(number: int, phase: str, submit_ends_at: datetime) -> str:
    if phase == "submitting":
        return f"Voting for contest #{number} opens {stamp(submit_ends_at)}."
    if phase == "cancelled":
        return f"Contest #{number} was cancelled."
    return f"Voting for contest #{number} has closed."


def disqualify_when(number: int, phase: str) -> str:
    if phase == "submitting":
        return (f"Entries of contest #{number} get their numbers when voting opens; "
                "disqualify one during voting.")
    return f"Contest #{number} has ended; its results stand."


def no_entry(contest_number: int, entry_number: int) -> str:
    return f"Contest #{contest_number} has no entry {entry_number}."


def already_disqualified(entry_number: int) -> str:
    return f"Entry {entry_number} was already disqualified."


def already_ended(number: int) -> str:
    return f"Contest #{number} has already ended."
