"""``ContestStore``: rounds, entries, votes, the job → round map and the audit, in the feature's own tables.

Every check that must hold when two members act at once (a round's deadline, the per-member cap, one vote
per member) runs inside the transaction that writes, after the round's row is locked (PostgreSQL
``FOR UPDATE``; SQLite's transactions take the write lock at BEGIN), so two clicks can never both pass a
check that only one may. Refusals raise ``ContestProblem`` with the member's text (``refusals``).
Methods return frozen records (``records``), never live rows. Sessions come from ``Storage.session()``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.errors import ContestProblem, NotPermitted
from bot.features.contests import refusals
from bot.features.contests.records import OPEN_PHASES, Contest, Entry, Phase, Placing, Rules, Standing
from bot.features.contests.tables import (
    AuditRow,
    ContestJobRow,
    ContestRow,
    EntryImageRow,
    EntryRow,
    PlacingRow,
    PostRow,
    VoteRow,
)
from bot.storage import Storage


def new_id() -> str:
    return uuid.uuid4().hex


def to_contest(row: ContestRow) -> Contest:
    return Contest(
        id=row.id, guild_id=row.guild_id, number=row.number, channel_id=row.channel_id, created_by=row.created_by,
        theme=row.theme, rules=Rules.from_json(row.rules), max_entries=row.max_entries, blind=row.blind,
        joined_before_voting=row.joined_before_voting, prize=row.prize, phase=cast(Phase, row.phase),
        created_at=row.created_at, submit_ends_at=row.submit_ends_at, vote_ends_at=row.vote_ends_at,
        ended_at=row.ended_at, gallery_channel_id=row.gallery_channel_id)


def to_entry(row: EntryRow) -> Entry:
    return Entry(id=row.id, contest_id=row.contest_id, user_id=row.user_id, job_id=row.job_id,
                 image_index=row.image_index, prompt=row.prompt, seed=row.seed, number=row.number,
                 submitted_at=row.submitted_at, withdrawn_at=row.withdrawn_at, disqualified_at=row.disqualified_at)


async def next_seq(session: AsyncSession, contest_id: str) -> int:
    """The next post number of a round: its posts go out in the order they were owed."""
    last = await session.scalar(select(func.max(PostRow.seq)).where(PostRow.contest_id == contest_id))
    return (last if last is not None else -1) + 1


def owed_post(contest_id: str, seq: int, kind: str, now: datetime, *, entry_id: str | None = None,
              part: int = 0) -> PostRow:
    return PostRow(id=new_id(), contest_id=contest_id, seq=seq, kind=kind, entry_id=entry_id, part=part,
                   state="owed", message_id=None, attempts=0, next_attempt_at=None, created_at=now)


async def locked_contest(session: AsyncSession, contest_id: str) -> ContestRow:
    row = await session.get(ContestRow, contest_id, with_for_update=True)
    if row is None:
        raise ContestProblem(refusals.NO_OPEN_CONTEST)
    return row


class ContestStore:
    def __init__(self, storage: Storage, now: Callable[[], datetime]) -> None:
        self._storage = storage
        self._now = now

    def _session(self) -> AsyncSession:
        return self._storage.session()

    # --- rounds -------------------------------------------------------------------------------------
    async def create(self, *, guild_id: int, channel_id: int, created_by: int, theme: str, rules: Rules,
                     max_entries: int, blind: bool, joined_before_voting: bool, prize: str | None,
                     submit_s: float, vote_s: float, max_open: int) -> Contest:
        """A new round in ``submitting``, its announcement owed and its start audited, in one transaction."""
        now = self._now()
        async with self._session() as session, session.begin():
            open_now = await session.scalar(select(func.count()).select_from(ContestRow).where(
                ContestRow.guild_id == guild_id, ContestRow.phase.in_(OPEN_PHASES)))
            if (open_now or 0) >= max_open:
                raise ContestProblem(refusals.too_many_open(max_open))
            last = await session.scalar(select(func.max(ContestRow.number)).where(ContestRow.guild_id == guild_id))
            submit_ends_at = now + timedelta(seconds=submit_s)
            row = ContestRow(
                id=new_id(), guild_id=guild_id, number=(last or 0) + 1, channel_id=channel_id, created_by=created_by,
                theme=theme, rules=rules.to_json(), max_entries=max_entries, blind=blind,
                joined_before_voting=joined_before_voting, prize=prize, phase="submitting", created_at=now,
                submit_ends_at=submit_ends_at, vote_ends_at=submit_ends_at + timedelta(seconds=vote_s),
                ended_at=None, gallery_channel_id=None)
            session.add(row)
            await session.flush()  # the round's row before the rows that name it
            session.add(AuditRow(contest_id=row.id, guild_id=guild_id, actor_id=created_by, action="start",
                                 entry_number=None, reason=None, at=now))
            session.add(owed_post(row.id, 0, "announce", now))
        return to_contest(row)

    async def get(self, contest_id: str) -> Contest | None:
        async with self._session() as session:
            row = await session.get(ContestRow, contest_id)
            return to_contest(row) if row is not None else None

    async def by_number(self, guild_id: int, number: int) -> Contest | None:
        async with self._session() as session:
            row = await session.scalar(select(ContestRow).where(ContestRow.guild_id == guild_id,
                                                                ContestRow.number == number))
            return to_contest(row) if row is not None else None

    async def in_guild(self, guild_id: int, *, phases: Sequence[Phase] | None = None,
                       limit: int = 25) -> list[Contest]:
        """A server's rounds, newest first (``phases``: only those)."""
        query = select(ContestRow).where(ContestRow.guild_id == guild_id)
        if phases is not None:
            query = query.where(ContestRow.phase.in_(list(phases)))
        async with self._session() as session:
            rows = await session.scalars(query.order_by(ContestRow.number.desc()).limit(limit))
            return [to_contest(row) for row in rows]

    async def cancel(self, contest_id: str, actor_id: int, reason: str | None) -> Contest:
        now = self._now()
        async with self._session() as session, session.begin():
            row = await locked_contest(session, contest_id)
            if row.phase not in OPEN_PHASES:
                raise ContestProblem(refusals.already_ended(row.number))
            row.phase, row.ended_at = "cancelled", now
            session.add(AuditRow(contest_id=row.id, guild_id=row.guild_id, actor_id=actor_id, action="cancel",
                                 entry_number=None, reason=reason, at=now))
            session.add(owed_post(row.id, await next_seq(session, row.id), "cancelled", now))
        return to_contest(row)

    # --- the jobs that make entries -----------------------------------------------------------------
    async def record_job(self, job_id: str, contest_id: str, user_id: int) -> None:
        async with self._session() as session, session.begin():
            session.add(ContestJobRow(job_id=job_id, contest_id=contest_id, user_id=user_id, created_at=self._now()))

    async def forget_job(self, job_id: str) -> None:
        async with self._session() as session, session.begin():
            await session.execute(delete(ContestJobRow).where(ContestJobRow.job_id == job_id))

    async def contest_of_job(self, job_id: str) -> str | None:
        async with self._session() as session:
            row = await session.get(ContestJobRow, job_id)
            return row.contest_id if row is not None else None

    async def tries(self, contest_id: str, user_id: int) -> int:
        """A member's tries in a round (a refused one is forgotten at once: it cost nothing)."""
        async with self._session() as session:
            count = await session.scalar(select(func.count()).select_from(ContestJobRow).where(
                ContestJobRow.contest_id == contest_id, ContestJobRow.user_id == user_id))
            return int(count or 0)

    # --- entries ------------------------------------------------------------------------------------
    async def add_entry(self, contest_id: str, *, user_id: int, job_id: str, image_index: int, prompt: str,
                        seed: int, png: bytes) -> tuple[Contest, Entry, int]:
        """Enter one image; returns the round, the entry and how many entries the member now has."""
        now = self._now()
        async with self._session() as session, session.begin():
            row = await locked_contest(session, contest_id)
            if row.phase != "submitting" or now >= row.submit_ends_at:
                raise ContestProblem(refusals.entries_closed(row.number, row.phase, row.submit_ends_at))
            mine = (await session.scalars(select(EntryRow).where(
                EntryRow.contest_id == contest_id, EntryRow.user_id == user_id, EntryRow.withdrawn_at.is_(None),
                EntryRow.disqualified_at.is_(None)))).all()
            if any(entry.job_id == job_id and entry.image_index == image_index for entry in mine):
                raise ContestProblem(refusals.ALREADY_ENTERED)
            if len(mine) >= row.max_entries:  # a withdrawn entry no longer counts: it freed its slot
                raise ContestProblem(refusals.entry_cap(row.max_entries))
            entry = EntryRow(id=new_id(), contest_id=contest_id, user_id=user_id, job_id=job_id,
                             image_index=image_index, prompt=prompt, seed=seed, number=None, submitted_at=now,
                             withdrawn_at=None, disqualified_at=None)
            session.add(entry)
            await session.flush()
            session.add(EntryImageRow(entry_id=entry.id, png=png))
        return to_contest(row), to_entry(entry), len(mine) + 1

    async def withdraw(self, entry_id: str, user_id: int) -> tuple[Contest, Entry]:
        now = self._now()
        async with self._session() as session, session.begin():
            entry = await session.get(EntryRow, entry_id)
            if entry is None or entry.user_id != user_id:
                raise NotPermitted(refusals.NOT_YOUR_ENTRY)
            row = await locked_contest(session, entry.contest_id)
            if row.phase != "submitting" or now >= row.submit_ends_at:
                raise ContestProblem(refusals.withdraw_closed(row.number))
            if entry.withdrawn_at is not None:
                raise ContestProblem(refusals.ALREADY_WITHDRAWN)
            entry.withdrawn_at = now
        return to_contest(row), to_entry(entry)

    async def entries(self, contest_id: str, *, user_id: int | None = None, active: bool = False) -> list[Entry]:
        """A round's entries (``user_id``: one member's), in gallery order once numbered, else as entered."""
        query = select(EntryRow).where(EntryRow.contest_id == contest_id)
        if user_id is not None:
            query = query.where(EntryRow.user_id == user_id)
        if active:
            query = query.where(EntryRow.withdrawn_at.is_(None), EntryRow.disqualified_at.is_(None))
        async with self._session() as session:
            rows = await session.scalars(query.order_by(EntryRow.number, EntryRow.submitted_at, EntryRow.id))
            return [to_entry(row) for row in rows]

    async def entry(self, entry_id: str) -> Entry | None:
        async with self._session() as session:
            row = await session.get(EntryRow, entry_id)
            return to_entry(row) if row is not None else None

    async def image(self, entry_id: str) -> bytes | None:
        async with self._session() as session:
            row = await session.get(EntryImageRow, entry_id)
            return row.png if row is not None else None

    # --- votes --------------------------------------------------------------------------------------
    async def vote(self, entry_id: str, user_id: int) -> tuple[Contest, Entry, Entry | None]:
        """One vote per member per round: a second vote replaces the first. Returns (round, entry, the entry
        the vote was on before, if any)."""
        now = self._now()
        async with self._session() as session, session.begin():
            entry = await session.get(EntryRow, entry_id)
            if entry is None:
                raise ContestProblem(refusals.ENTRY_REMOVED)
            row = await locked_contest(session, entry.contest_id)
            if row.phase != "voting" or now >= row.vote_ends_at:
                raise ContestProblem(refusals.voting_not_open(row.number, row.phase, row.submit_ends_at))
            if entry.disqualified_at is not None or entry.withdrawn_at is not None:
                raise ContestProblem(refusals.ENTRY_REMOVED)
            if entry.user_id == user_id:
                raise ContestProblem(refusals.NO_SELF_VOTE)
            vote = await session.get(VoteRow, (row.id, user_id))
            previous = await session.get(EntryRow, vote.entry_id) if vote is not None else None
            if vote is None:
                session.add(VoteRow(contest_id=row.id, user_id=user_id, entry_id=entry_id, voted_at=now))
            else:
                vote.entry_id, vote.voted_at = entry_id, now
        return to_contest(row), to_entry(entry), to_entry(previous) if previous is not None else None

    async def vote_of(self, contest_id: str, user_id: int) -> Entry | None:
        async with self._session() as session:
            vote = await session.get(VoteRow, (contest_id, user_id))
            entry = await session.get(EntryRow, vote.entry_id) if vote is not None else None
            return to_entry(entry) if entry is not None else None

    async def vote_count(self, contest_id: str) -> int:
        async with self._session() as session:
            return int(await session.scalar(select(func.count()).select_from(VoteRow).where(
                VoteRow.contest_id == contest_id)) or 0)

    # --- moderation ---------------------------------------------------------------------------------
    async def disqualify(self, contest_id: str, number: int, actor_id: int, reason: str | None) -> tuple[Entry, int]:
        """Take entry ``number`` out of a voting round and its votes with it (their voters may vote again);
        audited. Returns the entry and how many votes it lost."""
        now = self._now()
        async with self._session() as session, session.begin():
            row = await locked_contest(session, contest_id)
            if row.phase != "voting":
                raise ContestProblem(refusals.disqualify_when(row.number, row.phase))
            entry = await session.scalar(select(EntryRow).where(EntryRow.contest_id == contest_id,
                                                                EntryRow.number == number))
            if entry is None:
                raise ContestProblem(refusals.no_entry(row.number, number))
            if entry.disqualified_at is not None:
                raise ContestProblem(refusals.already_disqualified(number))
            entry.disqualified_at = now
            votes = await session.scalar(select(func.count()).select_from(VoteRow).where(
                VoteRow.contest_id == contest_id, VoteRow.entry_id == entry.id))
            await session.execute(delete(VoteRow).where(VoteRow.contest_id == contest_id,
                                                        VoteRow.entry_id == entry.id))
            session.add(AuditRow(contest_id=contest_id, guild_id=row.guild_id, actor_id=actor_id, action="disqualify",
                                 entry_number=number, reason=reason, at=now))
        return to_entry(entry), int(votes or 0)

    async def audit(self, contest_id: str) -> list[tuple[str, int, int | None, str | None]]:
        """(action, who, entry number, reason) for each moderator action on a round, oldest first."""
        async with self._session() as session:
            rows = await session.scalars(select(AuditRow).where(AuditRow.contest_id == contest_id)
                                         .order_by(AuditRow.id))
            return [(row.action, row.actor_id, row.entry_number, row.reason) for row in rows]

    # --- results ------------------------------------------------------------------------------------
    async def placings(self, contest_id: str) -> list[Placing]:
        """A closed round's tally, in rank order (empty before it closes)."""
        async with self._session() as session:
            rows = await session.execute(
                select(PlacingRow, EntryRow).join(EntryRow, EntryRow.id == PlacingRow.entry_id)
                .where(PlacingRow.contest_id == contest_id).order_by(PlacingRow.rank))
            return [Placing(to_entry(entry), placing.rank, placing.votes, placing.place, placing.points)
                    for placing, entry in rows]

    async def leaderboard(self, guild_id: int, limit: int = 10) -> list[Standing]:
        """A server's members by contest points, then by wins (first places); only closed rounds count."""
        points = func.sum(PlacingRow.points)
        wins = func.count(PlacingRow.place).filter(PlacingRow.place == 1)
        podiums = func.count(PlacingRow.place)
        async with self._session() as session:
            rows = await session.execute(
                select(PlacingRow.user_id, points, wins, podiums)
                .join(ContestRow, ContestRow.id == PlacingRow.contest_id)
                .where(ContestRow.guild_id == guild_id, ContestRow.phase == "closed", PlacingRow.points > 0)
                .group_by(PlacingRow.user_id)
                .order_by(points.desc(), wins.desc(), PlacingRow.user_id).limit(limit))
            return [Standing(int(user), int(total), int(won), int(placed)) for user, total, won, placed in rows]
