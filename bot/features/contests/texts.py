"""Every text a member reads about a prompt contest: the channel's posts and the private answers.

The project's voice (``bot.discord_ui.texts``): short sentences, no config keys or internal ids; deadlines as
Discord timestamps, which each reader sees in their own time; user text (themes, prompts, prizes) escaped
once through ``fit_user_text``. Until a round's results, no text names an entry's author, and in a blind
round none shows an entry's prompt to anyone but its author. ``tests/snapshots/contest_texts.txt`` holds
every template rendered, so a wording change is a reviewed change.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.discord_ui.texts import MESSAGE_LIMIT, fit_user_text
from bot.features.contests.records import Contest, Entry, Placing, Standing
from bot.features.contests.refusals import stamp
from bot.features.contests.tally import POINTS

MEDALS = {1: "🥇", 2: "🥈", 3: "🥉"}
REVEAL_PER_MESSAGE = 8  # entries per reveal message: 8 lines with a prompt of 150 characters fit in 2000
PHASE_WORDS = {"submitting": "entries open", "voting": "voting", "closed": "closed", "cancelled": "cancelled"}
TIE_BREAK = "A tie goes to the entry submitted first."


def entries_word(count: int) -> str:
    return f"{count} {'entry' if count == 1 else 'entries'}"


def votes_word(count: int) -> str:
    return f"{count} {'vote' if count == 1 else 'votes'}"


def title(contest: Contest) -> str:
    return f"**{fit_user_text(contest.theme, 200)}** (contest #{contest.number})"


def rules_line(contest: Contest, images_per_try: int) -> str:
    rules = contest.rules
    parts = [f"model {fit_user_text(rules.model, 64)}", f"{rules.width}×{rules.height}", f"{rules.steps} steps"]
    if rules.same_seed:
        parts.append(f"the same seed for everyone ({rules.seed}), so only the prompt differs")
    else:
        parts.append(f"{images_per_try} images to pick from per try" if images_per_try > 1 else "1 image per try")
    if contest.blind:
        parts.append("prompts stay hidden until the results")
    parts.append(f"up to {entries_word(contest.max_entries)} each")
    return "Rules: " + " · ".join(parts)


def _deadlines(contest: Contest) -> str:
    submit, vote = contest.submit_ends_at, contest.vote_ends_at
    return (f"Entries close {stamp(submit)} ({stamp(submit, 'f')}) · "
            f"voting closes {stamp(vote)} ({stamp(vote, 'f')}).")


def announcement(contest: Contest, images_per_try: int) -> str:
    lines = [
        f"🎨 **New prompt contest:** {title(contest)}",
        f"Make an image for the theme with `/contest enter` (contest #{contest.number} if several are running): "
        "you get private images to pick from, and the Submit button under one enters it. Entries are shown "
        "without their authors until the results.",
        rules_line(contest, images_per_try),
        _deadlines(contest),
    ]
    if contest.joined_before_voting:
        lines.append("Only members who joined the server before voting opens can vote.")
    if contest.prize:
        lines.append(f"Prize: {fit_user_text(contest.prize, 200)}")
    return "\n".join(lines)[:MESSAGE_LIMIT]


def voting_open(contest: Contest, count: int) -> str:
    hidden = "their authors or prompts" if contest.blind else "their authors"
    return (f"🗳 **Voting is open:** {title(contest)}\n"
            f"{entries_word(count)}, shown without {hidden} in the gallery below. Vote for your favourite until "
            f"{stamp(contest.vote_ends_at)} ({stamp(contest.vote_ends_at, 'f')}): one vote each, and you can change "
            "it. Votes stay hidden until the results.")[:MESSAGE_LIMIT]


def gallery_entry(entry: Entry, *, blind: bool) -> str:
    heading = f"**Entry {entry.number}**"
    return heading if blind else f"{heading}\n> {fit_user_text(entry.prompt, 1500)}"


def gallery_entry_removed(number: int | None) -> str:
    return f"**Entry {number}** was removed by a moderator."


def gallery_end(contest: Contest, count: int) -> str:
    lines = [f"That's all {entries_word(count)}. Press **Vote** under your favourite: one vote each, until "
             f"{stamp(contest.vote_ends_at)}; voting again moves your vote. You can't vote for your own entry."]
    if contest.joined_before_voting:
        lines.append("Only members who joined the server before voting opened can vote.")
    lines.append("**My vote** shows yours, privately.")
    return "\n".join(lines)


def results(contest: Contest, placings: Sequence[Placing], votes: int) -> str:
    where = "in the gallery"
    podium = [placing for placing in placings if placing.place is not None]
    if not podium:
        return (f"🗳 **Results:** {title(contest)}\nNobody voted, so there is no winner this time. Every entry with "
                f"its author and prompt is {where}.")[:MESSAGE_LIMIT]
    lines = [f"🏆 **Results:** {title(contest)}"]
    for placing in podium:
        assert placing.place is not None
        lines.append(f"{MEDALS[placing.place]} <@{placing.entry.user_id}> with entry {placing.entry.number} · "
                     f"{votes_word(placing.votes)}")
        lines.append(f"> {fit_user_text(placing.entry.prompt, 300)}")
    points = ", ".join(f"{value} for {place}" for value, place in zip(POINTS, ("first", "second", "third"),
                                                                            strict=True))
    lines.append(f"{entries_word(len(placings))}, {votes_word(votes)}. {TIE_BREAK} Every entry with its author "
                 f"and prompt is {where}. Points: {points}; see `/contest leaderboard`.")
    if contest.prize:
        lines.append(f"Prize: {fit_user_text(contest.prize, 200)}")
    return "\n".join(lines)[:MESSAGE_LIMIT]


def reveal_parts(count: int) -> int:
    """How many reveal messages a tally of ``count`` entries takes (decided when the round closes)."""
    return -(-count // REVEAL_PER_MESSAGE)


def reveal(contest: Contest, placings: Sequence[Placing], part: int) -> str:
    """Part ``part`` of the list of every entry, in rank order, with its author, votes and prompt."""
    shown = placings[part * REVEAL_PER_MESSAGE:(part + 1) * REVEAL_PER_MESSAGE]
    lines = [f"**Every entry of {fit_user_text(contest.theme, 200)}**, with its author and prompt:"] if part == 0 \
        else []
    for placing in shown:
        medal = f" {MEDALS[placing.place]}" if placing.place is not None else ""
        lines.append(f"Entry {placing.entry.number}{medal} · <@{placing.entry.user_id}> · "
                     f"{votes_word(placing.votes)}\n> {fit_user_text(placing.entry.prompt, 150)}")
    return "\n".join(lines)[:MESSAGE_LIMIT]


def no_entries(contest: Contest) -> str:
    return f"🎨 {title(contest)} ended without entries, so there is no vote this time."


def cancelled(contest: Contest) -> str:
    return f"✖ {title(contest)} was cancelled by a moderator."


# --- private answers -----------------------------------------------------------------------------------
def started(contest: Contest, announcement: str) -> str:
    """The moderator's answer to /contest start; ``announcement``: ``posted``, ``owed`` or ``failed``."""
    where = f"<#{contest.channel_id}>"
    if announcement == "posted":
        return f"✅ Contest #{contest.number} started: the announcement is in {where}."
    if announcement == "failed":
        return (f"⚠ Contest #{contest.number} started, but the bot may not post in {where}. Give it Send Messages "
                f"and Attach Files there, or cancel it with `/contest cancel contest:{contest.number}` and start it "
                "in another channel.")
    return (f"✅ Contest #{contest.number} started; the announcement will be posted in {where} as soon as the bot "
            "can post there.")


def making(contest: Contest) -> str:
    return f"🎨 Making your images for {title(contest)}…"


def try_result(contest: Contest, prompt: str, entered: int, count: int) -> str:
    pick = "Press **Submit** under the one you want to enter" if count > 1 else "Press **Submit** to enter it"
    lines = [f"Your images for {title(contest)}:" if count > 1 else f"Your image for {title(contest)}:",
             f"> {fit_user_text(prompt, 1000)}",
             f"{pick} (you have {entered} of {contest.max_entries} entries); entries close "
             f"{stamp(contest.submit_ends_at)}. **Try again** makes new ones. Only you see this."]
    return "\n".join(lines)[:MESSAGE_LIMIT]


def try_failed(ending: str) -> str:
    """A try that made no images: ``ending`` is how any request ends without images (``failure_text``)."""
    return f"{ending} Make a new try with `/contest enter`."[:MESSAGE_LIMIT]


def entered(contest: Contest, count: int) -> str:
    return (f"✅ Entered! You have {count} of {contest.max_entries} entries in {title(contest)}. Until entries close "
            f"{stamp(contest.submit_ends_at)} you can withdraw one with `/contest my-entries`.")


def withdrawn(contest: Contest, remaining: int) -> str:
    return f"↩ Withdrawn. You have {remaining} of {contest.max_entries} entries in {title(contest)}."


def voted(contest: Contest, number: int | None, previous: int | None) -> str:
    until = f"You can change it until {stamp(contest.vote_ends_at)}."
    if previous is None:
        return f"🗳 Your vote is on entry {number}. {until}"
    if previous == number:
        return f"🗳 Your vote was already on entry {number}. {until}"
    return f"🗳 Your vote moved from entry {previous} to entry {number}. {until}"


def my_vote(contest: Contest, entry: Entry | None) -> str:
    if entry is None:
        return f"You haven't voted in {title(contest)}."
    return f"Your vote is on entry {entry.number} in {title(contest)}."


def disqualified(number: int, votes: int) -> str:
    lost = "" if not votes else "; its vote was removed, and that member can vote again" if votes == 1 else \
        f"; its {votes} votes were removed, and those members can vote again"
    return f"Entry {number} is disqualified{lost}. It is recorded in the contest's audit."


def cancelled_reply(contest: Contest) -> str:
    return f"Contest #{contest.number} is cancelled; its channel has been told."


def status(contest: Contest, entries: int, *, mine: int, vote: Entry | None, winners: Sequence[Placing]) -> str:
    lines = [f"{title(contest)}: {PHASE_WORDS[contest.phase]} · {entries_word(entries)}"]
    if contest.phase == "submitting":
        lines.append(f"Entries close {stamp(contest.submit_ends_at)}; voting closes {stamp(contest.vote_ends_at)}. "
                     f"You have {mine} of {contest.max_entries} entries.")
    elif contest.phase == "voting":
        yours = f"Your vote is on entry {vote.number}." if vote is not None else "You haven't voted yet."
        lines.append(f"Voting closes {stamp(contest.vote_ends_at)}. {yours}")
    elif contest.phase == "closed" and contest.ended_at is not None:
        podium = [f"{MEDALS[p.place]} <@{p.entry.user_id}>" for p in winners if p.place is not None]
        lines.append(f"Ended {stamp(contest.ended_at)}." + (f" {' '.join(podium)}" if podium else " No winner."))
    return "\n".join(lines)[:MESSAGE_LIMIT]


def contest_list(contests: Sequence[Contest]) -> str:
    if not contests:
        return "No contests in this server yet. Moderators start one with `/contest start`."
    lines = ["**Contests in this server**"]
    for contest in contests:
        when = {"submitting": f"entries close {stamp(contest.submit_ends_at)}",
                "voting": f"voting closes {stamp(contest.vote_ends_at)}"}.get(
            contest.phase, f"{PHASE_WORDS[contest.phase]} {stamp(contest.ended_at)}" if contest.ended_at else "")
        lines.append(f"#{contest.number} · {fit_user_text(contest.theme, 100)} · {when} · <#{contest.channel_id}>")
    return "\n".join(lines)[:MESSAGE_LIMIT]


def leaderboard(standings: Sequence[Standing]) -> str:
    if not standings:
        return "Nobody has points yet: they come with a podium place when a contest closes."
    lines = ["🏆 **Contest leaderboard**"]
    for rank, standing in enumerate(standings, start=1):
        wins = f", {standing.wins} {'win' if standing.wins == 1 else 'wins'}" if standing.wins else ""
        points = f"{standing.points} {'point' if standing.points == 1 else 'points'}"
        lines.append(f"{rank}. <@{standing.user_id}> · {points}{wins}")
    lines.append(f"Points: {', '.join(str(value) for value in POINTS)} for first, second and third place.")
    return "\n".join(lines)[:MESSAGE_LIMIT]


def my_entries(contest: Contest, entries: Sequence[Entry]) -> str:
    if not entries:
        return f"You have no entries in {title(contest)}."
    lines = [f"Your entries in {title(contest)} ({len(entries)} of {contest.max_entries}):"]
    for index, entry in enumerate(entries, start=1):
        number = f"entry {entry.number}" if entry.number is not None else f"image {index}"
        lines.append(f"{index}. {number}: {fit_user_text(entry.prompt, 200)}")
    if contest.phase == "submitting":
        lines.append(f"**Withdraw** takes one back (until entries close {stamp(contest.submit_ends_at)}).")
    return "\n".join(lines)[:MESSAGE_LIMIT]
