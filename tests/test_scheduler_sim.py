"""The scheduler simulation (``python -m bench.scheduler_sim``) on small runs: it keeps working, and its
flood scenario shows the goal of issue 14 (a light server waits for the batch in progress only, however
many servers flood, and throughput stays at or above FIFO's)."""

from __future__ import annotations

import pytest

from bench import scheduler_sim
from bench.scheduler_sim import Scenario, make_flood_arrivals, run_fifo, run_scheduler, summarize


@pytest.mark.parametrize("seed", [3, 7])
def test_ten_flooders_a_light_server_waits_for_one_batch_at_most_and_throughput_holds(seed: int) -> None:
    arrivals = make_flood_arrivals(600, 10, 40, 1.5, 0.3, seed)
    scenario = Scenario("flood", arrivals, heavy=set(range(1, 11)), light=set(range(11, 51)), heavy_name="flooders")
    fifo = run_fifo(arrivals)
    row = summarize(run_scheduler(arrivals), scenario, fifo)
    assert sum(a.guild in scenario.light for a in arrivals) >= 10
    assert row["fewest flooders with jobs waiting, at a light arrival"] == "10 of 10"  # they really flood
    assert float(row["idle light: worst wait, all flooders' batches*"]) <= 1.0
    assert float(row["throughput / FIFO's"]) >= 1.0


def test_the_benchmark_prints_both_scenarios_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    scheduler_sim.main(["--jobs", "400", "--flood-jobs", "400", "--light-load", "0.3"])
    out = capsys.readouterr().out
    assert "== zipf:" in out and "== flood:" in out
    assert "FIFO, no batching" in out and "fair, no idle-first" in out and "fair, idle first" in out
