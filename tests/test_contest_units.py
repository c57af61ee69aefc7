"""The contests feature's pure parts and its tables on their own: the tally and its tie-break, button ids,
durations, the podium image, the config section, and the checks the store makes inside its transactions
(on both storage backends)."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from bot.core.config import load_config, parse_config
from bot.core.contest_config import ContestsConfig, resolve_contests
from bot.core.errors import ContestProblem, NotPermitted
from bot.features.contests import custom_ids, podium
from bot.features.contests.phase_store import PhaseStore
from bot.features.contests.records import Entry, Rules
from bot.features.contests.service import parse_duration, parse_size
from bot.features.contests.store import ContestStore
from bot.features.contests.tally import tally
from bot.features.contests.texts import reveal_parts
from bot.storage import Storage
from generation.request import GenerationRequest

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


def entry(entry_id: str, user: int, minute: int, number: int | None = None, *, withdrawn: bool = False) -> Entry:
    return Entry(id=entry_id, contest_id="c", user_id=user, job_id="j" * 32, image_index=0, prompt=entry_id, seed=1,
                 number=number, submitted_at=T0 + timedelta(minutes=minute),
                 withdrawn_at=T0 if withdrawn else None, disqualified_at=None)


# --- the tally ---------------------------------------------------------------------------------------
def test_most_votes_win_and_a_tie_goes_to_the_earlier_entry() -> None:
    entries = [entry("late", 1, 30, 1), entry("early", 2, 10, 2), entry("top", 3, 50, 3), entry("none", 4, 0, 4)]
    ranked = tally(entries, {"late": 2, "early": 2, "top": 5})
    assert [(line.entry.id, line.rank, line.votes, line.place, line.points) for line in ranked] == [
        ("top", 1, 5, 1, 3), ("early", 2, 2, 2, 2), ("late", 3, 2, 3, 1), ("none", 4, 0, None, 0)]


def test_one_podium_place_per_member_never_for_an_entry_without_votes_nor_a_withdrawn_one() -> None:
    entries = [entry("a1", 1, 0, 1), entry("a2", 1, 1, 2), entry("b", 2, 2, 3), entry("gone", 3, 3, 4, withdrawn=True)]
    ranked = tally(entries, {"a1": 4, "a2": 3, "b": 0, "gone": 9})
    assert [(line.entry.id, line.place, line.points) for line in ranked] == [
        ("a1", 1, 3), ("a2", None, 0), ("b", None, 0)]


def test_simultaneous_entries_fall_back_to_the_gallery_number() -> None:
    ranked = tally([entry("x", 1, 0, 2), entry("y", 2, 0, 1)], {"x": 1, "y": 1})
    assert [line.entry.id for line in ranked] == ["y", "x"]


# --- ids, durations, sizes, the podium ------------------------------------------------------------
def test_button_ids_decode_to_what_made_them_and_nothing_else() -> None:
    target = "0123456789abcdef" * 2
    for action in custom_ids.ACTIONS:
        index = 3 if action == "submit" else None
        made = custom_ids.encode(action, target, index)
        assert custom_ids.decode(made) == custom_ids.ButtonId(action, target, index)
    with pytest.raises(ValueError, match="needs"):
        custom_ids.encode("submit", target)
    with pytest.raises(ValueError, match="32 lowercase hex"):
        custom_ids.encode("vote", target.upper())
    for bad in (f"contest:vote:{target}:1", f"contest:submit:{target}", f"contest:submit:{target}:4",
                f"imagine:vote:{target}", f"contest:vote:{target}x"):
        assert custom_ids.decode(bad) is None


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("2h", 7200), ("1d12h", 129600), ("1h 30min", 5400),
                                               ("14d", 14 * 86400), ("1m", 60)])
def test_durations_members_write(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0m", "30s", "15d", "2 hours", "h", "-1h"])
def test_durations_refused(text: str) -> None:
    assert parse_duration(text) is None


def test_sizes() -> None:
    assert parse_size("512x768") == (512, 768) and parse_size("512 × 512") == (512, 512)
    assert parse_size("big") is None and parse_size("5x5") is None


def png(colour: str, size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_podium_puts_first_in_the_middle_highest() -> None:
    picture = Image.open(io.BytesIO(podium.compose([png("red"), png("blue"), png("green", (128, 64))]))).convert("RGB")
    column = podium.TILE + podium.GAP
    middle, left, right = (podium.MARGIN + index * column + podium.TILE // 2 for index in (1, 0, 2))
    top_of = {x: next(y for y in range(picture.height) if picture.getpixel((x, y)) != podium.BACKGROUND)
              for x in (middle, left, right)}
    assert picture.getpixel((middle, top_of[middle] + 20)) == (255, 0, 0)  # first place, red, in the middle
    assert top_of[middle] < top_of[left] < top_of[right]
    assert Image.open(io.BytesIO(podium.compose([png("red")]))).size == picture.size
    with pytest.raises(ValueError):
        podium.compose([])


# --- config ------------------------------------------------------------------------------------------
def test_the_shipped_config_documents_the_contest_keys_with_the_defaults() -> None:
    lines = (REPO / "config.yaml").read_text().splitlines()
    start = lines.index("contests:")
    for key in ContestsConfig.model_fields:
        line = next((line for line in lines[start:] if line.strip().startswith(f"{key}:")), None)
        assert line is not None and "#" in line, f"config.yaml does not explain contests.{key}"
    assert load_config(REPO / "config.yaml").contests == ContestsConfig()


def test_a_server_overrides_the_keys_it_writes() -> None:
    config = parse_config('contests: {max_tries_per_member: 4, images_per_try: 3}\n'
                          'guilds:\n  "7":\n    contests: {max_tries_per_member: null}\n')
    resolved = resolve_contests(config.contests, config.guilds[7].contests)
    assert (resolved.max_tries_per_member, resolved.images_per_try, resolved.max_open_per_guild) == (None, 3, 3)
    assert resolve_contests(config.contests, None) == config.contests


# --- the store's checks, in its transactions ---------------------------------------------------------
class Moment:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def make_round(storage: Storage, now: Callable[[], datetime]) -> tuple[ContestStore, PhaseStore, str]:
    store = ContestStore(storage, now)
    contest = await store.create(guild_id=5, channel_id=6, created_by=7, theme="Dunes", rules=Rules("tiny", 2, 64, 64),
                                 max_entries=1, blind=False, joined_before_voting=False, prize=None, submit_s=3600,
                                 vote_s=1800, max_open=1)
    return store, PhaseStore(storage, now, shuffle=lambda entries: entries.reverse(), reveal_parts=reveal_parts), \
        contest.id


async def done_job(storage: Storage, user: int) -> str:
    job = await storage.create_job(GenerationRequest("dunes", seed=1, count=1), user_id=user, guild_id=5,
                                   kind="contest")
    return job.id


async def test_the_store_holds_the_deadline_the_cap_and_one_vote(tmp_path: Path, database_url: str) -> None:
    moment = Moment()
    async with Storage(tmp_path, database_url, clock=moment) as storage:
        store, phases, contest_id = await make_round(storage, moment)
        with pytest.raises(ContestProblem, match="already runs 1 contest at once"):
            await make_round(storage, moment)
        jobs = {user: await done_job(storage, user) for user in (1, 2)}
        await store.add_entry(contest_id, user_id=1, job_id=jobs[1], image_index=0, prompt="a", seed=1, png=b"1")
        with pytest.raises(ContestProblem, match="1 of 1 entries"):
            await store.add_entry(contest_id, user_id=1, job_id=jobs[1], image_index=1, prompt="a", seed=2, png=b"2")
        moment.now = T0 + timedelta(minutes=10)
        await store.add_entry(contest_id, user_id=2, job_id=jobs[2], image_index=0, prompt="b", seed=1, png=b"3")
        moment.now = T0 + timedelta(hours=1)  # the deadline, before any loop moved the round on
        with pytest.raises(ContestProblem, match="closed <t:"):
            await store.add_entry(contest_id, user_id=3, job_id=jobs[2], image_index=0, prompt="c", seed=1, png=b"4")
        with pytest.raises(NotPermitted):
            await store.withdraw((await store.entries(contest_id, user_id=1))[0].id, 2)
        assert [contest.id for contest in await phases.due()] == [contest_id]
        assert (await phases.open_voting(contest_id)) is not None
        assert await phases.open_voting(contest_id) is None  # a second loop (or a restart) finds nothing to do
        first, second = await store.entries(contest_id)
        assert (first.prompt, first.number, second.prompt, second.number) == ("b", 1, "a", 2)  # shuffled, numbered
        await store.vote(first.id, 9)
        _, _, previous = await store.vote(second.id, 9)
        assert previous == first and await store.vote_count(contest_id) == 1
        with pytest.raises(ContestProblem, match="own entry"):
            await store.vote(second.id, 1)
        moment.now = T0 + timedelta(hours=2)
        with pytest.raises(ContestProblem, match="has closed"):
            await store.vote(first.id, 8)
        assert await phases.close(contest_id) is not None and await phases.close(contest_id) is None
        assert [(p.entry.prompt, p.votes, p.place) for p in await store.placings(contest_id)] == [
            ("a", 1, 1), ("b", 0, None)]
        assert [post.kind for post in await phases.posts(contest_id)] == [
            "announce", "voting_open", "gallery_entry", "gallery_entry", "gallery_end", "results", "reveal"]
        assert [(s.user_id, s.points, s.wins) for s in await store.leaderboard(5)] == [(1, 3, 1)]
        assert await store.tries(contest_id, 1) == 0  # tries are counted by contest_jobs rows: none recorded here
