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
