"""The fair order: weighted across guilds by cost, round robin across users, FIFO per user."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.scheduler import FairQueue


@dataclass(eq=False)
class Item:
    guild_id: int
    user_id: int
    cost: float = 1.0
    name: str = ""

    @property
    def lane(self) -> int:
        return self.guild_id


def queue(weights: dict[int, float] | None = None) -> FairQueue[Item]:
    return FairQueue(lambda gid: (weights or {}).get(gid, 1.0))


def drain_names(fq: FairQueue[Item], n: int | None = None) -> list[str]:
    out = []
    while len(fq) and (n is None or len(out) < n):
        head = next(fq.order())
        fq.take([head])
        out.append(head.name)
    return out


def test_fifo_within_user_round_robin_across_users() -> None:
    fq = queue()
    for name in ("a1", "a2", "a3"):
        fq.push(Item(1, 1, name=name))
    fq.push(Item(1, 2, name="b1"))
    fq.push(Item(1, 3, name="c1"))
    assert [item.name for item in fq.order()] == ["a1", "b1", "c1", "a2", "a3"]
    assert drain_names(fq) == ["a1", "b1", "c1", "a2", "a3"]


def test_guilds_share_by_weight_and_cost() -> None:
    fq = queue({1: 2.0})
    for i in range(100):
        fq.push(Item(1, i % 3, name="heavy-weight"))
        fq.push(Item(2, i % 3, name="plain"))
        fq.push(Item(3, 0, cost=4.0, name="expensive"))
    served = Counter(drain_names(fq, 70))
    assert abs(served["heavy-weight"] - 2 * served["plain"]) <= 2
    assert abs(served["plain"] - 4 * served["expensive"]) <= 4


def test_newly_busy_guild_goes_before_a_flooding_guild() -> None:
    fq = queue()
    for i in range(50):
        fq.push(Item(1, i % 5, name="flood"))
    drain_names(fq, 20)
    fq.push(Item(2, 1, name="light"))
    assert next(fq.order()).name == "light"


def test_idle_guild_banks_no_credit() -> None:
    fq = queue()
    for _ in range(60):
        fq.push(Item(1, 1, name="flood"))
    drain_names(fq, 40)
    for _ in range(6):
        fq.push(Item(2, 1, name="late"))
    assert drain_names(fq, 6) == ["late", "flood"] * 3


def test_pause_hides_a_guild_and_resume_restores_it_without_credit() -> None:
    fq = queue()
    for _ in range(4):
        fq.push(Item(1, 1, name="a"))
        fq.push(Item(2, 1, name="b"))
    fq.pause(2)
    assert drain_names(fq, 2) == ["a", "a"]
    assert fq.guild_length(2) == 4 and fq.is_paused(2)
    fq.resume(2)
    assert drain_names(fq) == ["b", "a", "b", "a", "b", "b"]


def test_remove_takes_out_one_item_without_charging() -> None:
    fq = queue()
    a, b, c = Item(1, 1, name="a"), Item(1, 1, name="b"), Item(2, 1, name="c")
    for item in (a, b, c):
        fq.push(item)
    assert fq.remove(b) and not fq.remove(b)
    assert len(fq) == 2 and drain_names(fq) == ["a", "c"]


items = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 3), st.sampled_from([0.25, 1.0, 2.0, 8.0])), min_size=1, max_size=60
)


@settings(max_examples=150, deadline=None)
@given(items, st.data())
def test_projected_order_is_the_order_of_service(entries: list[tuple[int, int, float]], data: st.DataObject) -> None:
    fq = queue({0: 3.0, 1: 0.5})
    pushed = [Item(g, u, c, name=str(i)) for i, (g, u, c) in enumerate(entries)]
    for item in pushed:
        fq.push(item)
    projected = [item.name for item in fq.order()]
    assert sorted(projected, key=int) == [item.name for item in pushed]  # nothing lost or doubled
    served = []
    while len(fq):
        batch = [next(fq.order())]
        # batch-mates: the next picks that are at the head of their user's FIFO, as the dispatcher takes them
        extra = data.draw(st.integers(0, 3))
        users = {(batch[0].guild_id, batch[0].user_id)}
        for item in list(fq.order(1 + extra))[1:]:
            if (item.guild_id, item.user_id) not in users:
                users.add((item.guild_id, item.user_id))
                batch.append(item)
        fq.take(batch)
        served.extend(item.name for item in batch)
    assert sorted(served, key=int) == [item.name for item in pushed]
    per_user: dict[tuple[int, int], list[int]] = {}
    for name in served:
        item = pushed[int(name)]
        per_user.setdefault((item.guild_id, item.user_id), []).append(int(name))
    assert all(ids == sorted(ids) for ids in per_user.values())  # FIFO within each user


@settings(max_examples=150, deadline=None)
@given(items)
def test_taking_heads_one_by_one_follows_the_projection(entries: list[tuple[int, int, float]]) -> None:
    fq = queue({2: 2.0})
    for i, (g, u, c) in enumerate(entries):
        fq.push(Item(g, u, c, name=str(i)))
    projected = [item.name for item in fq.order()]
    assert drain_names(fq) == projected


def flooded(n_guilds: int, jobs_each: int, *, idle_first: bool = True) -> FairQueue[Item]:
    fq: FairQueue[Item] = FairQueue(lambda gid: 1.0, idle_first=idle_first)
    for i in range(jobs_each):
        for gid in range(1, n_guilds + 1):
            fq.push(Item(gid, i % 3, name=f"flood{gid}"))
    return fq


def test_an_idle_guild_goes_before_ten_flooders_even_when_they_tie_at_the_virtual_time() -> None:
    """Plain SFQ starts the idle guild at the virtual time, level with flooders whose tags sit there; those
    were scheduled earlier, so it waits one job of each. As a new guild it goes first."""
    for idle_first, place in ((False, 10), (True, 1)):
        fq = flooded(10, 20, idle_first=idle_first)
        drain_names(fq, 11)  # one job of each flooder, then flooder 1 again: flooders 2-10 sit at the virtual time
        fq.push(Item(99, 1, name="light"))
        assert [item.name for item in fq.order()].index("light") + 1 == place


def test_a_new_guilds_priority_is_its_first_job_and_it_pays_for_it() -> None:
    fq = flooded(3, 10)
    drain_names(fq, 3)
    for name in ("l1", "l2", "l3"):
        fq.push(Item(99, 1, name=name))
    assert fq.is_new(99)
    assert drain_names(fq, 1) == ["l1"] and not fq.is_new(99)
    # charged for l1: its tag is now one job ahead of the flooders', which go first
    assert drain_names(fq, 4) == ["flood1", "flood2", "flood3", "l2"]


def test_a_guild_that_keeps_something_queued_or_running_is_never_new() -> None:
    fq = flooded(2, 3)
    assert fq.is_new(1) and fq.is_new(2)  # nothing was queued before
    drain_names(fq, 2)
    assert not fq.is_new(1) and not fq.is_new(2)
    drain_names(fq)  # guild 1's last job now "runs": it owes it until the scheduler forgets the guild
    fq.push(Item(1, 1, name="again"))
    assert not fq.is_new(1)
    fq.remove(next(fq.order()))
    fq.forget(1)  # nothing queued or running any more
    fq.push(Item(1, 1, name="later"))
    assert fq.is_new(1)


def test_a_paused_new_guild_keeps_its_priority_and_a_cancelled_one_leaves_nothing_behind() -> None:
    fq = flooded(2, 5)
    drain_names(fq, 2)
    light = Item(99, 1, name="light")
    fq.push(light)
    fq.pause(99)
    assert "light" not in [item.name for item in fq.order()]
    drain_names(fq, 2)
    fq.resume(99)
    assert next(fq.order()).name == "light"
    assert fq.remove(light) and not fq.is_new(99) and fq.guild_length(99) == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0.25, 1.0, 2.0, 8.0]), min_size=3 * 20, max_size=3 * 20),
       st.lists(st.tuples(st.integers(0, 19), st.integers(4, 9), st.sampled_from([0.25, 1.0, 8.0])), max_size=30))
def test_idle_guilds_do_not_change_the_order_among_backlogged_guilds(
        costs: list[float], visits: list[tuple[int, int, float]]) -> None:
    """Weighted fairness among busy guilds is what it was: the order in which backlogged guilds are served,
    restricted to them, is the same with idle guilds arriving (served first or not) as without any."""
    weights = {1: 2.0, 2: 1.0, 3: 0.5}

    def served(idle_first: bool, with_visitors: bool) -> list[str]:
        fq: FairQueue[Item] = FairQueue(lambda gid: weights.get(gid, 1.0), idle_first=idle_first)
        for i, cost in enumerate(costs):
            fq.push(Item(1 + i % 3, i % 2, cost, name=f"b{i}"))
        arrivals = {}
        if with_visitors:
            for step, guild, cost in visits:
                arrivals.setdefault(step, []).append(Item(guild, 1, cost, name=f"v{guild}"))
        out = []
        for step in range(20):  # 20 takes: no backlogged guild (20 jobs each) can run dry
            for item in arrivals.get(step, []):
                fq.push(item)
            head = next(fq.order())
            fq.take([head])
            if not head.name.startswith("v"):
                out.append(head.name)
            elif fq.guild_length(head.guild_id) == 0:
                fq.forget(head.guild_id)  # the visitor's job "ran"; it may come back as a new guild
        return out

    alone = served(True, with_visitors=False)
    for idle_first in (True, False):
        with_idle = served(idle_first, with_visitors=True)
        assert with_idle == alone[:len(with_idle)]
