"""The fair order of queued jobs: weighted fair queueing across guilds, round robin across a
guild's users, FIFO within a user. A pure data structure; it knows nothing of time or executors.

Guilds are ordered by start-time fair queueing (SFQ): each guild with queued work has a virtual
start tag; the guild with the smallest tag goes next and its tag advances by ``cost / weight``.
A guild that becomes busy starts at the current virtual time, never behind it, so an idle guild
cannot bank credit. While a guild's jobs still run, its debt (virtual finish ahead of the current
virtual time) is kept so bursts pay for themselves; once nothing of it is queued or running the
owner calls ``forget`` and the debt is dropped too.

Idle guilds first (the sparse flows of FQ-CoDel): SFQ alone puts a newly busy guild level with the
flooding guilds whose tags sit at the current virtual time, so it could wait one batch of each of
them. Instead a guild that had nothing queued and owes nothing (it was forgotten, or its debt has
been paid) becomes *new*: the first job of each new guild goes before every other guild's jobs, in
the order they became new. Its quantum is that one job, whatever its cost (FQ-CoDel's is one
full-size packet): a larger one would let a new guild's several small jobs that cannot share a
batch take several batches ahead of a light guild that arrived just after it. Its compatible jobs
may still join that job's batch as batch-mates. Once served the guild is an ordinary one, charged
for what it took, so priority is paid for and weights hold in the long run. A guild that always has
something queued is never new, and one that empties its queue while its job runs owes that job
until it ends: flooding cannot buy priority. So a light guild waits for the batch in progress and
one batch per guild that became new before it, however many flood.

Costs: push/remove/take O(log G + jobs of that user); head and the next k picks O(k log k) by
walking the heap without popping it; the whole order (for positions) O(n log G).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Generic, Protocol, TypeVar


class Fairable(Protocol):
    @property
    def lane(self) -> int:
        """Who shares one fair share: a guild (its id), or one direct-message user alone (see ``Job.lane``)."""
        ...

    @property
    def user_id(self) -> int: ...

    @property
    def cost(self) -> float: ...


T = TypeVar("T", bound=Fairable)


class _Guild(Generic[T]):
    __slots__ = ("gid", "heap_seq", "size", "tag", "users")

    def __init__(self, gid: int, tag: float) -> None:
        self.gid = gid
        self.tag = tag
        self.heap_seq = -1  # seq of this guild's valid heap entry; -1 when it has none (paused)
        self.size = 0
        self.users: OrderedDict[int, deque[T]] = OrderedDict()  # round-robin order: front goes next

    def round_robin(self, blocked_users: Collection[tuple[int, int]]) -> Iterator[T]:
        """The guild's jobs in the order it would serve them: one per user per round."""
        queues = [q for uid, q in self.users.items() if (self.gid, uid) not in blocked_users]
        depth = 0
        while queues:
            queues = [q for q in queues if len(q) > depth]
            for queue in queues:
                yield queue[depth]
            depth += 1


class FairQueue(Generic[T]):
    """``weight(guild_id)`` is read whenever a guild is charged, so weight changes apply at once.
    ``idle_first=False`` turns the new-guild priority off (plain SFQ, the benchmark's baseline)."""

    def __init__(self, weight: Callable[[int], float], *, idle_first: bool = True) -> None:
        self._weight = weight
        self._idle_first = idle_first
        self._guilds: dict[int, _Guild[T]] = {}
        self._finish: dict[int, float] = {}  # idle guilds whose last virtual finish is still ahead
        # New guilds, in the order they became new (a dict as an ordered set). They have no heap entry until
        # one of their jobs has been taken.
        self._new: dict[int, None] = {}
        self._paused: set[int] = set()
        self._heap: list[tuple[float, int, int]] = []  # (tag, seq, guild id); stale entries are skipped
        self._seq = 0
        self._vtime = 0.0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    @property
    def virtual_time(self) -> float:
        return self._vtime

    def guild_length(self, guild_id: int) -> int:
        guild = self._guilds.get(guild_id)
        return guild.size if guild is not None else 0

    def guild_lengths(self) -> dict[int, int]:
        return {gid: guild.size for gid, guild in self._guilds.items()}

    def is_paused(self, guild_id: int) -> bool:
        return guild_id in self._paused

    def is_new(self, guild_id: int) -> bool:
        """Whether the guild's next job goes before every busy guild's (see module docstring)."""
        return guild_id in self._new

    def _schedule(self, guild: _Guild[T]) -> None:
        self._seq += 1
        guild.heap_seq = self._seq
        heapq.heappush(self._heap, (guild.tag, self._seq, guild.gid))

    def _valid(self, entry: tuple[float, int, int]) -> bool:
        guild = self._guilds.get(entry[2])
        return guild is not None and guild.heap_seq == entry[1]

    def _tidy(self) -> None:
        while self._heap and not self._valid(self._heap[0]):
            heapq.heappop(self._heap)
        if len(self._heap) > 2 * len(self._guilds) + 32:  # rebuild: keeps stale entries amortised O(1)
            self._heap = [e for e in self._heap if self._valid(e)]
            heapq.heapify(self._heap)
        if len(self._finish) > 2 * len(self._guilds) + 1024:
            self._finish = {gid: tag for gid, tag in self._finish.items() if tag > self._vtime}

    def push(self, item: T) -> None:
        guild = self._guilds.get(item.lane)
        if guild is None:
            owed = self._finish.pop(item.lane, None)
            start = self._vtime if owed is None else max(self._vtime, owed)
            guild = self._guilds[item.lane] = _Guild(item.lane, start)
            if self._idle_first and (owed is None or owed <= self._vtime):
                # Nothing queued and nothing owed: a sparse guild. It waits outside the heap, ahead of it.
                self._new[item.lane] = None
            elif item.lane not in self._paused:
                self._schedule(guild)
        queue = guild.users.get(item.user_id)
        if queue is None:
            queue = guild.users[item.user_id] = deque()
        queue.append(item)
        guild.size += 1
        self._len += 1

    def _drop(self, guild: _Guild[T], user_id: int, queue: deque[T]) -> None:
        if not queue:
            del guild.users[user_id]
        guild.size -= 1
        self._len -= 1
        if guild.size == 0:
            del self._guilds[guild.gid]
            self._new.pop(guild.gid, None)  # emptied: new again only once it owes nothing (see push)
            guild.heap_seq = -1
            if guild.tag > self._vtime:
                self._finish[guild.gid] = guild.tag

    def remove(self, item: T) -> bool:
        """Take ``item`` out without charging its guild (cancel, expiry, hand-back)."""
        guild = self._guilds.get(item.lane)
        queue = guild.users.get(item.user_id) if guild is not None else None
        if guild is None or queue is None or item not in queue:
            return False
        queue.remove(item)
        self._drop(guild, item.user_id, queue)
        self._tidy()
        return True

    def take(self, items: Sequence[T]) -> None:
        """Dequeue a batch, charging each guild ``cost / weight``. ``items[0]`` is the batch head;
        every item must be the oldest queued job of its user (FIFO within a user)."""
        if not items:
            return
        # A new head's tag is the virtual time it became new at, never ahead: serving it out of turn leaves the
        # virtual time (the busy guilds' clock) where it is.
        self._vtime = max(self._vtime, self._guilds[items[0].lane].tag)
        touched: dict[int, _Guild[T]] = {}
        for item in items:
            guild = self._guilds[item.lane]
            queue = guild.users[item.user_id]
            if queue[0] is item:
                queue.popleft()
            else:
                queue.remove(item)
            if queue:
                guild.users.move_to_end(item.user_id)  # served: back of the round robin
            guild.tag = max(guild.tag, self._vtime) + item.cost / self._weight(item.lane)
            self._drop(guild, item.user_id, queue)
            touched[guild.gid] = guild
        for gid, guild in touched.items():
            self._new.pop(gid, None)  # served: an ordinary guild from now on
            if gid in self._guilds and gid not in self._paused:
                self._schedule(guild)
        self._tidy()

    def forget(self, guild_id: int) -> None:
        """The guild has nothing queued or running: drop the virtual time it still owed, so its
        next job starts at the current virtual time, as a new guild (see module docstring)."""
        if guild_id not in self._guilds:
            self._finish.pop(guild_id, None)

    def pause(self, guild_id: int) -> None:
        self._paused.add(guild_id)
        guild = self._guilds.get(guild_id)
        if guild is not None:
            guild.heap_seq = -1

    def resume(self, guild_id: int) -> None:
        if guild_id not in self._paused:
            return
        self._paused.discard(guild_id)
        guild = self._guilds.get(guild_id)
        if guild is not None:
            guild.tag = max(guild.tag, self._vtime)  # no credit for the paused time
            if guild_id not in self._new:  # a new guild keeps its priority: it has not been served
                self._schedule(guild)

    def order(self, limit: int | None = None, *, blocked_guilds: Collection[int] = (),
              blocked_users: Collection[tuple[int, int]] = ()) -> Iterator[T]:
        """Queued items in the order they would be taken (paused and blocked ones left out).
        Read-only: do not change the queue while iterating."""
        heap = self._heap
        frontier: list[tuple[float, int, int, int]] = []  # (tag, seq, heap index or -1, guild id)
        running: dict[int, Iterator[T]] = {}
        seq = self._seq
        count = 0
        # New guilds' first jobs first; the rest of each such guild's jobs then take their turn in the heap at
        # the tag it will have by then (with a fresh seq: behind equal tags, as take schedules it).
        for gid in list(self._new):
            if gid in self._paused or gid in blocked_guilds:
                continue
            jobs = self._guilds[gid].round_robin(blocked_users)
            first = next(jobs, None)
            if first is None:
                continue
            yield first
            count += 1
            if limit is not None and count >= limit:
                return
            running[gid] = jobs
            seq += 1
            frontier.append((max(self._guilds[gid].tag, self._vtime) + first.cost / self._weight(gid), seq, -1, gid))
        heapq.heapify(frontier)
        if heap:
            heapq.heappush(frontier, (heap[0][0], heap[0][1], 0, heap[0][2]))
        while frontier:
            tag, entry_seq, index, gid = heapq.heappop(frontier)
            if index >= 0:
                for child in (2 * index + 1, 2 * index + 2):
                    if child < len(heap):
                        entry = heap[child]
                        heapq.heappush(frontier, (entry[0], entry[1], child, entry[2]))
                guild = self._guilds.get(gid)
                if guild is None or guild.heap_seq != entry_seq or gid in blocked_guilds:
                    continue
                running[gid] = guild.round_robin(blocked_users)
            item = next(running[gid], None)
            if item is None:
                continue
            yield item
            count += 1
            if limit is not None and count >= limit:
                return
            seq += 1
            heapq.heappush(frontier, (tag + item.cost / self._weight(gid), seq, -1, gid))
