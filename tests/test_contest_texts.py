"""Every text a member can read about prompt contests, rendered with representative values and compared with the
reviewed snapshot ``tests/snapshots/contest_texts.txt`` (as ``test_member_texts.py`` does for /imagine's), so a
wording change is a deliberate, reviewed change. Accept a reviewed change with ``UPDATE_SNAPSHOTS=1``.

Besides the project's leaks (config keys, internal ids, jargon), a contest text must never name an author
before the results, nor show a blind round's prompt in the channel."""

from __future__ import annotations

import difflib
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.discord_ui.texts import failure_text
from bot.features.contests import refusals, texts
from bot.features.contests.records import Contest, Entry, Placing, Rules, Standing
from tests.test_member_texts import LEAKS

SNAPSHOT = Path(__file__).parent / "snapshots" / "contest_texts.txt"
HEADER = ("# Every contest text a member can read, rendered by tests/test_contest_texts.py with representative "
          "values.\n# Review a change here as you would review the wording itself; accept it with "
          "UPDATE_SNAPSHOTS=1.\n")
T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
ALICE, CAROL, DAVE = 101, 102, 103

ROUND = Contest(id="c" * 32, guild_id=1, number=3, channel_id=55, created_by=9, theme="Autumn *lanterns*",
                rules=Rules("sd15", 25, 512, 512), max_entries=2, blind=False, joined_before_voting=False,
                prize="A custom role", phase="submitting", created_at=T0, submit_ends_at=T0 + timedelta(hours=2),
                vote_ends_at=T0 + timedelta(days=1), ended_at=None, gallery_channel_id=None)
BLIND = replace(ROUND, rules=Rules("sd15", 25, 512, 512, seed=42), blind=True, joined_before_voting=True, prize=None)


def entry(number: int, user: int, prompt: str, minute: int = 0) -> Entry:
    return Entry(id=f"{number:032x}", contest_id=ROUND.id, user_id=user, job_id="j" * 32, image_index=0,
                 prompt=prompt, seed=7, number=number, submitted_at=T0 + timedelta(minutes=minute), withdrawn_at=None,
                 disqualified_at=None)


ENTRIES = [entry(1, CAROL, "lanterns in the rain"), entry(2, ALICE, "a paper lantern on a lake"),
           entry(3, DAVE, "one lantern, seen from above")]
PLACINGS = [Placing(ENTRIES[1], 1, 3, 1, 3), Placing(ENTRIES[0], 2, 1, 2, 2), Placing(ENTRIES[2], 3, 1, 3, 1)]


def rendered() -> dict[str, str]:
    voting, closed = replace(ROUND, phase="voting"), replace(ROUND, phase="closed", ended_at=T0 + timedelta(days=1))
    found = {
        "announcement": texts.announcement(ROUND, 2),
        "announcement, blind same-seed round for early members": texts.announcement(BLIND, 2),
        "private: making": texts.making(ROUND),
        "private: the images of a try": texts.try_result(ROUND, "a paper lantern on a lake", 1, 2),
        "private: the image of a same-seed try": texts.try_result(BLIND, "a sleeper train", 0, 1),
        "private: entered": texts.entered(ROUND, 2),
        "private: a try without images": texts.try_failed(failure_text("failed", "The GPU ran out of memory.")),
        "private: a try dropped at a restart": texts.try_failed(failure_text(
            "dropped", "it was never linked to its contest")),
        "private: withdrawn": texts.withdrawn(ROUND, 1),
        "moderator: started": texts.started(ROUND, "posted"),
        "moderator: started, announcement pending": texts.started(ROUND, "owed"),
        "moderator: started, the bot may not post there": texts.started(ROUND, "failed"),
        "channel: voting open": texts.voting_open(voting, 3),
        "channel: voting open, blind": texts.voting_open(replace(BLIND, phase="voting"), 3),
        "gallery: an entry": texts.gallery_entry(ENTRIES[1], blind=False),
        "gallery: an entry, blind": texts.gallery_entry(ENTRIES[1], blind=True),
        "gallery: a removed entry": texts.gallery_entry_removed(2),
        "gallery: the end": texts.gallery_end(voting, 3),
        "gallery: the end, early members only": texts.gallery_end(replace(BLIND, phase="voting"), 3),
        "private: voted": texts.voted(voting, 2, None),
        "private: vote moved": texts.voted(voting, 2, 1),
        "private: vote again on the same": texts.voted(voting, 2, 2),
        "private: my vote": texts.my_vote(voting, ENTRIES[1]),
        "private: no vote yet": texts.my_vote(voting, None),
        "moderator: disqualified": texts.disqualified(2, 3),
        "moderator: disqualified, one vote": texts.disqualified(2, 1),
        "moderator: disqualified, no votes": texts.disqualified(2, 0),
        "moderator: cancelled": texts.cancelled_reply(ROUND),
        "channel: results": texts.results(closed, PLACINGS, 5),
        "channel: results, nobody voted": texts.results(closed, [replace(p, place=None, points=0, votes=0)
                                                                 for p in PLACINGS], 0),
        "gallery: every entry revealed": texts.reveal(closed, PLACINGS, 0),
        "channel: no entries": texts.no_entries(closed),
        "channel: cancelled": texts.cancelled(replace(ROUND, phase="cancelled")),
        "status: entries open": texts.status(ROUND, 4, mine=1, vote=None, winners=[]),
        "status: voting": texts.status(voting, 4, mine=1, vote=ENTRIES[0], winners=[]),
        "status: closed": texts.status(closed, 3, mine=1, vote=None, winners=PLACINGS),
        "list": texts.contest_list([ROUND, voting, closed]),
        "list, none": texts.contest_list([]),
        "leaderboard": texts.leaderboard([Standing(ALICE, 5, 1, 2), Standing(CAROL, 2, 0, 1), Standing(DAVE, 1, 0, 1)]),
        "leaderboard, empty": texts.leaderboard([]),
        "my entries": texts.my_entries(ROUND, ENTRIES[:2]),
        "my entries, none": texts.my_entries(ROUND, []),
    }
    refused = {
        "in servers only": refusals.IN_SERVERS_ONLY, "moderators only": refusals.MODERATORS_ONLY,
        "no contest running": refusals.NO_OPEN_CONTEST, "bad size": refusals.BAD_SIZE,
        "already entered": refusals.ALREADY_ENTERED, "not your image": refusals.NOT_YOUR_IMAGE,
        "not a contest image": refusals.NOT_A_CONTEST_IMAGE, "image gone": refusals.IMAGE_GONE,
        "image not ready": refusals.IMAGE_NOT_READY, "not your entry": refusals.NOT_YOUR_ENTRY,
        "already withdrawn": refusals.ALREADY_WITHDRAWN, "entry removed": refusals.ENTRY_REMOVED,
        "self-vote": refusals.NO_SELF_VOTE, "joined too late": refusals.JOINED_TOO_LATE,
        "not your try": refusals.NOT_YOUR_TRY, "another server's round": refusals.NOT_HERE,
        "bad duration": refusals.bad_duration("submit"),
        "pick one": refusals.pick_one([2, 3]), "no such contest": refusals.no_such_contest(9),
        "too many rounds": refusals.too_many_open(3), "too costly": refusals.too_costly(8.0, 4.0),
        "entries closed (deadline)": refusals.entries_closed(3, "submitting", ROUND.submit_ends_at),
        "entries closed (voting)": refusals.entries_closed(3, "voting", ROUND.submit_ends_at),
        "entries closed (ended)": refusals.entries_closed(3, "closed", ROUND.submit_ends_at),
        "tries used": refusals.tries_used(10), "tries used, one": refusals.tries_used(1),
        "entry cap": refusals.entry_cap(2), "withdraw closed": refusals.withdraw_closed(3),
        "voting not open yet": refusals.voting_not_open(3, "submitting", ROUND.submit_ends_at),
        "voting closed": refusals.voting_not_open(3, "closed", ROUND.submit_ends_at),
        "voting cancelled": refusals.voting_not_open(3, "cancelled", ROUND.submit_ends_at),
        "disqualify too early": refusals.disqualify_when(3, "submitting"),
        "disqualify too late": refusals.disqualify_when(3, "closed"), "no entry": refusals.no_entry(3, 12),
        "already disqualified": refusals.already_disqualified(2), "already ended": refusals.already_ended(3),
    }
    found.update({f"refused: {name}": text for name, text in refused.items()})
    return found


def snapshot_text(found: dict[str, str]) -> str:
    return HEADER + "".join(f"\n## {name}\n{text}\n" for name, text in found.items())


def test_contest_texts_match_the_reviewed_snapshot() -> None:
    text = snapshot_text(rendered())
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(text)
    expected = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), "snapshot", "now"))
        raise AssertionError(f"{diff}\nContest texts changed; if intended, accept with UPDATE_SNAPSHOTS=1 "
                             "and commit tests/snapshots/contest_texts.txt")


def test_contest_texts_fit_discord_leak_nothing_and_name_no_author_before_the_results() -> None:
    revealing = ("channel: results", "gallery: every entry revealed", "status: closed", "leaderboard")
    for name, text in rendered().items():
        assert 0 < len(text) <= 2000, name
        assert not LEAKS.search(text), f"{name}: {text}"
        assert "job" not in text.lower() and ROUND.id not in text, f"{name}: {text}"
        if not name.startswith(revealing):
            assert not any(f"<@{user}>" in text for user in (ALICE, CAROL, DAVE)), f"{name} names an author: {text}"
        if "blind" in name and not name.startswith("private"):
            assert "lantern on a lake" not in text, f"{name} shows a blind prompt: {text}"
    assert "Autumn \\*lanterns\\*" in rendered()["announcement"]  # the theme is escaped once
