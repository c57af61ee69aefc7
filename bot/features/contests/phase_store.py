"""``PhaseStore``: a round's phase changes and the outbox of the messages they owe its channel.

A phase change is one transaction that also writes what it owes: opening the vote numbers the entries in a
shuffled order and owes the gallery; closing tallies the votes into ``contest_placings`` and owes the
results. Each change applies only if the round is still in the phase it leaves (a conditional update), so a
change that two loops, or a loop before and after a restart, both find due runs once. A kill after the
commit loses nothing: the owed posts are in the database, and the poster sends them on the next pass.

Posts are sent in their round's order (``seq``). Each is ``owed`` until Discord accepted it, then
``posted`` with its message id; a send carries the post's nonce (``Post.nonce``), so a send repeated
after a kill between "posted" and "recorded" returns the first message instead of making a second.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import cast

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.features.contests.records import Contest, Post, PostKind
from bot.features.contests.store import next_seq, owed_post, to_contest, to_entry
from bot.features.contests.tables import ContestRow, EntryRow, PlacingRow, PostRow, VoteRow
from bot.features.contests.tally import tally
from bot.storage import Storage

Shuffle = Callable[[list[EntryRow]], None]
# How many reveal messages a closed round needs for this many entries (the texts size each message).
RevealParts = Callable[[int], int]


def to_post(row: PostRow) -> Post:
    return Post(id=row.id, contest_id=row.contest_id, seq=row.seq, kind=cast(PostKind, row.kind),
                entry_id=row.entry_id, part=row.part, state=row.state, message_id=row.message_id,
                attempts=row.attempts)


class PhaseStore:
    def __init__(self, storage: Storage, now: Callable[[], datetime], *, shuffle: Shuffle,
                 reveal_parts: RevealParts) -> None:
        self._storage = storage
        self._now = now
        self._shuffle = shuffle
        self._reveal_parts = reveal_parts

    def _session(self) -> AsyncSession:
        return self._storage.session()

    # --- what is due ----------------------------------------------------------------------------------
    async def due(self) -> list[Contest]:
        """Rounds whose current phase has run out, earliest deadline first."""
        now = self._now()
        async with self._session() as session:
            rows = await session.scalars(select(ContestRow).where(
                ((ContestRow.phase == "submitting") & (ContestRow.submit_ends_at <= now))
                | ((ContestRow.phase == "voting") & (ContestRow.vote_ends_at <= now))))
            contests = [to_contest(row) for row in rows]
        return sorted(contests, key=lambda c: c.submit_ends_at if c.phase == "submitting" else c.vote_ends_at)

    async def next_deadline(self) -> datetime | None:
        """The next moment a round's phase runs out (None: no round is open)."""
        async with self._session() as session:
            submitting = await session.scalar(select(func.min(ContestRow.submit_ends_at))
                                              .where(ContestRow.phase == "submitting"))
            voting = await session.scalar(select(func.min(ContestRow.vote_ends_at))
                                          .where(ContestRow.phase == "voting"))
        return min((moment for moment in (submitting, voting) if moment is not None), default=None)

    # --- the changes ----------------------------------------------------------------------------------
    async def open_voting(self, contest_id: str) -> Contest | None:
        """Entries close: number them in a shuffled order and owe the gallery (or, without entries, close the
        round and owe that news). None when the round had already moved on."""
        now = self._now()
        async with self._session() as session, session.begin():
            row = await session.get(ContestRow, contest_id, with_for_update=True)
            if row is None or row.phase != "submitting" or row.submit_ends_at > now:
                return None
            entries = list((await session.scalars(select(EntryRow).where(
                EntryRow.contest_id == contest_id, EntryRow.withdrawn_at.is_(None),
                EntryRow.disqualified_at.is_(None)).order_by(EntryRow.submitted_at, EntryRow.id))).all())
            seq = await next_seq(session, contest_id)
            if not entries:
                row.phase, row.ended_at = "closed", now
                session.add(owed_post(contest_id, seq, "no_entries", now))
                return to_contest(row)
            self._shuffle(entries)
            for number, entry in enumerate(entries, start=1):
                entry.number = number
            row.phase = "voting"
            session.add(owed_post(contest_id, seq, "voting_open", now))
            for offset, entry in enumerate(entries, start=1):
                session.add(owed_post(contest_id, seq + offset, "gallery_entry", now, entry_id=entry.id))
            session.add(owed_post(contest_id, seq + len(entries) + 1, "gallery_end", now))
        return to_contest(row)

    async def close(self, contest_id: str) -> Contest | None:
        """Voting ends: tally (``tally.tally``), store every entry's rank and points, owe the results and the
        reveal of every author and prompt. None when the round had already moved on."""
        now = self._now()
        async with self._session() as session, session.begin():
            row = await session.get(ContestRow, contest_id, with_for_update=True)
            if row is None or row.phase != "voting" or row.vote_ends_at > now:
                return None
            entries = [to_entry(entry) for entry in await session.scalars(
                select(EntryRow).where(EntryRow.contest_id == contest_id))]
            counts = {entry_id: int(count) for entry_id, count in await session.execute(
                select(VoteRow.entry_id, func.count()).where(VoteRow.contest_id == contest_id)
                .group_by(VoteRow.entry_id))}
            ranked = tally(entries, counts)
            for line in ranked:
                session.add(PlacingRow(contest_id=contest_id, entry_id=line.entry.id, user_id=line.entry.user_id,
                                       rank=line.rank, votes=line.votes, place=line.place, points=line.points))
            row.phase, row.ended_at = "closed", now
            seq = await next_seq(session, contest_id)
            session.add(owed_post(contest_id, seq, "results", now))
            for part in range(self._reveal_parts(len(ranked))):
                session.add(owed_post(contest_id, seq + 1 + part, "reveal", now, part=part))
        return to_contest(row)

    # --- the outbox -----------------------------------------------------------------------------------
    async def owed_posts(self) -> list[Post]:
        """Posts owed and due a try, in each round's order."""
        now = self._now()
        async with self._session() as session:
            rows = await session.scalars(select(PostRow).where(
                PostRow.state == "owed", PostRow.next_attempt_at.is_(None) | (PostRow.next_attempt_at <= now))
                .order_by(PostRow.created_at, PostRow.contest_id, PostRow.seq))
            return [to_post(row) for row in rows]

    async def next_retry(self) -> datetime | None:
        async with self._session() as session:
            return await session.scalar(select(func.min(PostRow.next_attempt_at)).where(PostRow.state == "owed"))

    async def posted(self, post_id: str, message_id: int) -> None:
        async with self._session() as session, session.begin():
            await session.execute(update(PostRow).where(PostRow.id == post_id)
                                  .values(state="posted", message_id=message_id, next_attempt_at=None))

    async def failed(self, post_id: str, retry_at: datetime | None) -> None:
        """One more failed try; ``retry_at`` None gives up (logged by the poster)."""
        async with self._session() as session, session.begin():
            await session.execute(update(PostRow).where(PostRow.id == post_id).values(
                attempts=PostRow.attempts + 1, next_attempt_at=retry_at,
                state="owed" if retry_at is not None else "failed"))

    async def post_of(self, contest_id: str, kind: PostKind, entry_id: str | None = None) -> Post | None:
        query = select(PostRow).where(PostRow.contest_id == contest_id, PostRow.kind == kind)
        if entry_id is not None:
            query = query.where(PostRow.entry_id == entry_id)
        async with self._session() as session:
            row = await session.scalar(query.order_by(PostRow.seq).limit(1))
            return to_post(row) if row is not None else None

    async def posts(self, contest_id: str) -> list[Post]:
        async with self._session() as session:
            rows = await session.scalars(select(PostRow).where(PostRow.contest_id == contest_id)
                                         .order_by(PostRow.seq))
            return [to_post(row) for row in rows]

    async def set_gallery(self, contest_id: str, channel_id: int) -> Contest:
        async with self._session() as session, session.begin():
            row = await session.get(ContestRow, contest_id)
            assert row is not None
            row.gallery_channel_id = channel_id
        return to_contest(row)
