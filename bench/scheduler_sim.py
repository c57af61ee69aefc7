"""Simulate the scheduler against a plain FIFO on the same arrivals: ``python -m bench.scheduler_sim``.

Two scenarios, each run three ways on the same arrivals: a plain FIFO without batching, the fair
scheduler with plain start-time fair queueing (``idle_first=False``: how it ordered servers before
idle servers got priority), and the fair scheduler as shipped (idle servers first).

- zipf: 50 guilds with Zipf-distributed load send 10,000 jobs, offered at 0.95 of FIFO's capacity.
- flood: 10 servers flood (a backlog of 20 jobs each at the start, then together 1.5 x FIFO's capacity,
  so each always has jobs queued) while 40 light servers send a job now and then (0.05 x capacity in
  all, from 120 s on).

Jobs are of mixed cost (SD 1.5 at two sizes and step counts, some SDXL). A fake executor takes
overhead + k x cost-per-image x images^0.7  seconds per batch, so batching pays off sub-linearly.
Time is simulated; nothing sleeps.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.core.config import AppConfig, Limits, SchedulerConfig
from bot.scheduler import Job, NullListener, Scheduler, SimulatedClock
from generation.interface import CancelToken, Outcome, ProgressCallback
from generation.request import GenerationRequest, GenerationResult, Timings, estimate_cost

OVERHEAD_S = 0.3
SECONDS_PER_COST = 0.9
BATCH_EXPONENT = 0.7
# (share, width, height, steps, cost weight): SD 1.5 mostly; SDXL at 1024² costs ~8x an SD 1.5 image
MIX = [(0.55, 512, 512, 25, 1.0), (0.15, 512, 512, 30, 1.0), (0.15, 768, 512, 25, 1.0), (0.15, 1024, 1024, 25, 2.0)]
COUNTS = [(0.4, 1), (0.2, 2), (0.4, 4)]


def batch_seconds(cost_per_image: float, images: int) -> float:
    return OVERHEAD_S + SECONDS_PER_COST * cost_per_image * math.pow(images, BATCH_EXPONENT)


@dataclass
class Arrival:
    at: float
    job_id: str
    guild: int
    user: int
    request: GenerationRequest
    cost: float


@dataclass
class Scenario:
    name: str
    arrivals: list[Arrival]
    heavy: set[int]
    light: set[int]
    heavy_name: str  # what the heavy guilds are called in the table


def draw_job(rng: random.Random, index: int) -> tuple[GenerationRequest, float]:
    _, width, height, steps, weight = rng.choices(MIX, [m[0] for m in MIX])[0]
    count = rng.choices([c[1] for c in COUNTS], [c[0] for c in COUNTS])[0]
    request = GenerationRequest(prompt=f"j{index}", width=width, height=height, steps=steps, guidance=7.0,
                                seed=index, count=count, scheduler="default", model=f"w{weight:g}")
    return request, estimate_cost(request, weight)


def fifo_mean_s(jobs: Sequence[tuple[GenerationRequest, float]]) -> float:
    """Mean seconds per job when FIFO runs each alone: offered loads are fractions of 1 / this."""
    return statistics.fmean(batch_seconds(cost / request.count, request.count) for request, cost in jobs)


def make_arrivals(n_jobs: int, n_guilds: int, zipf_s: float, load: float, seed: int) -> list[Arrival]:
    rng = random.Random(seed)
    weights = [1 / rank**zipf_s for rank in range(1, n_guilds + 1)]
    raw = []
    for index in range(n_jobs):
        request, cost = draw_job(rng, index)
        guild = rng.choices(range(1, n_guilds + 1), weights)[0]
        user = rng.randrange(1 + 40 // guild)  # big guilds have many users
        raw.append((guild, user, request, cost))
    rate = load / fifo_mean_s([(r, c) for _, _, r, c in raw])  # offered load relative to what FIFO can serve
    at, arrivals = 0.0, []
    for index, (guild, user, request, cost) in enumerate(raw):
        at += rng.expovariate(rate)
        arrivals.append(Arrival(at, f"j{index}", guild, user, request, cost))
    return arrivals


def make_flood_arrivals(n_jobs: int, n_flooders: int, n_light: int, flood_load: float, light_load: float,
                        seed: int, *, backlog: int = 20, warmup_s: float = 120.0) -> list[Arrival]:
    """Flooders are guilds 1..n_flooders (8 users each), light servers the next n_light (2 users each).
    Each flooder queues ``backlog`` jobs at t=0 and keeps offering more, so it always has jobs waiting;
    light servers send only after ``warmup_s``, once every flooder has had its first batch (a flooder's
    first job is a new server's too)."""
    rng = random.Random(seed)
    jobs = [draw_job(rng, index) for index in range(n_jobs)]
    total = flood_load + light_load
    rate = total / fifo_mean_s(jobs)
    at, arrivals = 0.0, []
    for index, (request, cost) in enumerate(jobs):
        if index >= backlog * n_flooders:
            at += rng.expovariate(rate)
        if at > warmup_s and rng.random() < light_load / total:
            guild, user = n_flooders + 1 + rng.randrange(n_light), rng.randrange(2)
        else:
            guild, user = 1 + index % n_flooders if at == 0.0 else 1 + rng.randrange(n_flooders), rng.randrange(8)
        arrivals.append(Arrival(at, f"j{index}", guild, user, request, cost))
    return arrivals


@dataclass
class Run:
    start: dict[str, float] = field(default_factory=dict)
    batches: list[tuple[float, float, list[str]]] = field(default_factory=list)  # (start, end, job ids)
    dispatch_cpu_per_job: list[float] = field(default_factory=list)
    admit_cpu_per_job: list[float] = field(default_factory=list)
    wall_s: float = 0.0


def run_fifo(arrivals: Sequence[Arrival]) -> Run:
    run, free_at = Run(), 0.0
    for arrival in arrivals:
        begin = max(free_at, arrival.at)
        free_at = begin + batch_seconds(arrival.cost / arrival.request.count, arrival.request.count)
        run.start[arrival.job_id] = begin
        run.batches.append((begin, free_at, [arrival.job_id]))
    return run


class SimExecutor:
    def __init__(self, clock: SimulatedClock, run: Run, costs: dict[str, float]) -> None:
        self.clock, self.run_log, self.costs = clock, run, costs

    @property
    def max_batch_images(self) -> int:
        return 4

    async def run(self, batch: Sequence[GenerationRequest], on_progress: ProgressCallback | None = None, *,
                  cancel_tokens: Sequence[CancelToken] | None = None) -> list[Outcome]:
        images = sum(request.count for request in batch)
        per_image = self.costs[batch[0].prompt] / batch[0].count  # equal for compatible requests
        begin = self.clock.monotonic()
        seconds = batch_seconds(per_image, images)
        await self.clock.sleep(seconds)
        self.run_log.batches.append((begin, begin + seconds, [request.prompt for request in batch]))
        return [GenerationResult(request, [], request.seeds(), Timings(denoise_s=seconds)) for request in batch]

    async def close(self, *, cancel_running: bool = False) -> None:
        return None


class StartTimes(NullListener):
    def __init__(self, clock: SimulatedClock, run: Run) -> None:
        self.clock, self.run_log = clock, run

    def started(self, job: Job) -> None:
        self.run_log.start[job.id] = self.clock.monotonic()


def run_scheduler(arrivals: Sequence[Arrival], *, idle_first: bool = True) -> Run:
    run = Run()
    clock = SimulatedClock()
    config = AppConfig(limits=Limits(user_rate=None, guild_rate=None, max_queued_per_user=None,
                                     max_queued_per_guild=None, daily_images_per_user=None),
                       scheduler=SchedulerConfig(max_queued=None, max_wait_s=86_400, initial_seconds_per_cost=1.0))
    executor = SimExecutor(clock, run, {a.job_id: a.cost for a in arrivals})
    scheduler = Scheduler(executor, config, clock=clock, listener=StartTimes(clock, run), record_timings=True,
                          idle_first=idle_first)

    async def feed() -> None:
        await scheduler.start()
        for arrival in arrivals:
            await clock.sleep(arrival.at - clock.monotonic())
            job = Job(id=arrival.job_id, request=arrival.request, user_id=arrival.user, guild_id=arrival.guild,
                      channel_id=1, cost=arrival.cost)
            cpu = time.thread_time()
            scheduler.submit(job)
            run.admit_cpu_per_job.append(time.thread_time() - cpu)
        await scheduler.drain(finish_queued=True)

    wall = time.perf_counter()
    asyncio.run(clock.run_until_done(feed()))
    run.wall_s = time.perf_counter() - wall
    for cpu, jobs in scheduler.dispatch_timings or []:
        run.dispatch_cpu_per_job.extend([cpu / jobs] * jobs)
    return run


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def waits_in_batches(run: Run, arrivals: Sequence[Arrival], jobs: set[str], heads: set[int] | None,
                     guild_of: dict[str, int], *, per_guild: bool = False) -> list[float]:
    """For each job: how many batch durations it waited through (fractions at the edges); only
    batches whose first job is from a guild in ``heads`` count, unless ``heads`` is None. With
    ``per_guild``: the most it waited through batches headed by any one guild."""
    batches = sorted(run.batches)
    begins = [b[0] for b in batches]
    out = []
    for arrival in arrivals:
        if arrival.job_id not in jobs:
            continue
        start = run.start[arrival.job_id]
        totals: dict[int, float] = {}
        index = max(0, bisect.bisect_right(begins, arrival.at) - 1)
        while index < len(batches) and batches[index][0] < start:
            b_start, b_end, members = batches[index]
            head = guild_of[members[0]]
            if heads is None or head in heads:
                overlap = min(b_end, start) - max(b_start, arrival.at)
                if overlap > 0:
                    key = head if per_guild else 0
                    totals[key] = totals.get(key, 0.0) + overlap / (b_end - b_start)
            index += 1
        out.append(max(totals.values(), default=0.0))
    return out


def idle_on_arrival(run: Run, arrivals: Sequence[Arrival]) -> set[str]:
    """Jobs that found nothing of their guild queued or running when they arrived."""
    end = {job: b_end for _, b_end, members in run.batches for job in members}
    busy_until: dict[int, float] = {}
    idle = set()
    for arrival in arrivals:
        if busy_until.get(arrival.guild, -1.0) <= arrival.at:
            idle.add(arrival.job_id)
        busy_until[arrival.guild] = max(busy_until.get(arrival.guild, -1.0), end[arrival.job_id])
    return idle


def fewest_backlogged(run: Run, arrivals: Sequence[Arrival], heavy: set[int], jobs: set[str]) -> int:
    """The fewest heavy guilds that had a job waiting (arrived, not started) when one of ``jobs`` arrived."""
    spans: dict[int, list[tuple[float, float]]] = {gid: [] for gid in heavy}
    for arrival in arrivals:  # arrival order: each guild's spans are merged as they come
        if arrival.guild in heavy and run.start[arrival.job_id] > arrival.at:
            merged = spans[arrival.guild]
            begin, end = arrival.at, run.start[arrival.job_id]
            if merged and begin <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((begin, end))
    begins = {gid: [b for b, _ in merged] for gid, merged in spans.items()}
    fewest = len(heavy)
    for arrival in arrivals:
        if arrival.job_id in jobs:
            at = arrival.at
            waiting = 0
            for gid, merged in spans.items():
                index = bisect.bisect_right(begins[gid], at) - 1
                waiting += index >= 0 and merged[index][1] > at
            fewest = min(fewest, waiting)
    return fewest


def summarize(run: Run, scenario: Scenario, fifo: Run | None = None) -> dict[str, str]:
    arrivals, light, heavy, who = scenario.arrivals, scenario.light, scenario.heavy, scenario.heavy_name
    guild_of = {a.job_id: a.guild for a in arrivals}
    waits = {a.job_id: run.start[a.job_id] - a.at for a in arrivals}
    light_jobs = {a.job_id for a in arrivals if a.guild in light}
    idle_light = light_jobs & idle_on_arrival(run, arrivals)
    heavy_jobs = {a.job_id for a in arrivals if a.guild in heavy}
    end = max(b[1] for b in run.batches)
    span = end - arrivals[0].at
    busy = sum(b[1] - b[0] for b in run.batches)
    idle_behind_one = waits_in_batches(run, arrivals, idle_light, heavy, guild_of, per_guild=True)
    idle_behind_heavy = waits_in_batches(run, arrivals, idle_light, heavy, guild_of)
    idle_behind_any = waits_in_batches(run, arrivals, idle_light, None, guild_of)
    behind_any = waits_in_batches(run, arrivals, light_jobs, None, guild_of)
    images = sum(a.request.count for a in arrivals)
    count_of = {a.job_id: a.request.count for a in arrivals}
    jobs_per_h = len(arrivals) / span * 3600
    row = {
        "light p50 / p99 / max wait (s)": " / ".join(
            f"{percentile([waits[j] for j in light_jobs], q):.1f}" for q in (50, 99, 100)),
        f"{who} p50 / p99 wait (s)": f"{percentile([waits[j] for j in heavy_jobs], 50):.1f} / "
                                     f"{percentile([waits[j] for j in heavy_jobs], 99):.1f}",
        f"idle light: worst wait, any one {who[:-1]}'s batches": f"{max(idle_behind_one):.2f}",
        f"idle light: worst wait, all {who}' batches*": f"{max(idle_behind_heavy):.2f}",
        "idle light: worst / p99 wait, all batches": f"{max(idle_behind_any):.2f} / "
                                                     f"{percentile(idle_behind_any, 99):.2f}",
        "any light job: worst / p99 wait, all batches": f"{max(behind_any):.2f} / {percentile(behind_any, 99):.2f}",
        "batches / mean images": f"{len(run.batches)} / "
                                 f"{statistics.fmean(sum(count_of[j] for j in b[2]) for b in run.batches):.2f}",
        "GPU busy fraction": f"{busy / span:.3f}",
        "throughput (jobs/h, images/h)": f"{jobs_per_h:.0f}, {images / span * 3600:.0f}",
        "throughput / FIFO's": "1.000" if fifo is None else
        f"{jobs_per_h / (len(arrivals) / (max(b[1] for b in fifo.batches) - arrivals[0].at) * 3600):.3f}",
        f"fewest {who} with jobs waiting, at a light arrival": f"{fewest_backlogged(run, arrivals, heavy, light_jobs)}"
                                                                f" of {len(heavy)}",
    }
    if run.dispatch_cpu_per_job:
        row["dispatcher CPU/job p50 / p99 (µs)"] = (f"{percentile(run.dispatch_cpu_per_job, 50) * 1e6:.0f} / "
                                                   f"{percentile(run.dispatch_cpu_per_job, 99) * 1e6:.0f}")
        row["admission CPU/job p50 / p99 (µs)"] = (f"{percentile(run.admit_cpu_per_job, 50) * 1e6:.0f} / "
                                                  f"{percentile(run.admit_cpu_per_job, 99) * 1e6:.0f}")
        row["wall time (s)"] = f"{run.wall_s:.1f}"
    return row


def report(scenario: Scenario, headline: str) -> None:
    """Run FIFO, plain fair queueing and idle-first fair queueing on the scenario; print them side by side."""
    fifo_run = run_fifo(scenario.arrivals)
    columns = {
        "FIFO, no batching": summarize(fifo_run, scenario),
        "fair, no idle-first": summarize(run_scheduler(scenario.arrivals, idle_first=False), scenario, fifo_run),
        "fair, idle first": summarize(run_scheduler(scenario.arrivals), scenario, fifo_run),
    }
    arrivals = scenario.arrivals
    print(f"== {scenario.name}: {headline}; {scenario.heavy_name} = {len(scenario.heavy)} guilds "
          f"({sum(a.guild in scenario.heavy for a in arrivals)} jobs), light = {len(scenario.light)} guilds "
          f"({sum(a.guild in scenario.light for a in arrivals)} jobs)")
    keys = list(columns["fair, idle first"])
    width = max(len(key) for key in keys)
    print(f"{'':{width}}" + "".join(f"  {name:>21}" for name in columns))
    for key in keys:
        print(f"{key:{width}}" + "".join(f"  {column.get(key, '-'):>21}" for column in columns.values()))
    print()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", choices=["zipf", "flood", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=10_000, help="zipf: jobs")
    parser.add_argument("--guilds", type=int, default=50, help="zipf: guilds")
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--load", type=float, default=0.95, help="zipf: offered load as a fraction of FIFO capacity")
    parser.add_argument("--flood-jobs", type=int, default=3000)
    parser.add_argument("--flooders", type=int, default=10)
    parser.add_argument("--light", type=int, default=40, help="flood: light servers")
    parser.add_argument("--flood-load", type=float, default=1.5, help="flood: the flooders' offered load, x FIFO's")
    parser.add_argument("--light-load", type=float, default=0.05, help="flood: the light servers' load, x FIFO's")
    parser.add_argument("--backlog", type=int, default=20, help="flood: jobs each flooder queues at the start")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.scenario in ("zipf", "both"):
        ranks = list(range(1, args.guilds + 1))
        zipf = Scenario("zipf", make_arrivals(args.jobs, args.guilds, args.zipf, args.load, args.seed),
                        heavy=set(ranks[:5]), light=set(ranks[args.guilds // 2:]), heavy_name="heavy guilds")
        report(zipf, f"{args.jobs} jobs, {args.guilds} guilds (Zipf s={args.zipf}), offered load {args.load:g} x "
                     "FIFO capacity")
    if args.scenario in ("flood", "both"):
        flooders = set(range(1, args.flooders + 1))
        light = set(range(args.flooders + 1, args.flooders + args.light + 1))
        flood = Scenario("flood", make_flood_arrivals(args.flood_jobs, args.flooders, args.light, args.flood_load,
                                                      args.light_load, args.seed, backlog=args.backlog),
                         heavy=flooders, light=light, heavy_name="flooders")
        report(flood, f"{args.flood_jobs} jobs; {args.flooders} flooders offer {args.flood_load:g} x FIFO capacity, "
                      f"{args.light} light servers {args.light_load:g} x")
    print("waits 'in batches' = batch durations waited through (partial batches count by overlap); a guild's\n"
          "batches = those whose first job is its; idle light = a light guild with nothing queued or running when\n"
          "the job arrived. * the goal (<= 1.0): a light server waits for the batch in progress only, however many\n"
          "flood.")


if __name__ == "__main__":
    main()
