"""The contests feature's rules, free of Discord: start a round, make entries under its rules, enter and
withdraw images, vote, moderate, and resume the jobs a restart cut off.

An entry's images are made as any /imagine request is: stored as a job (kind ``contest``), then admitted by
the same scheduler, with the same rates, queue caps and daily images, fairly queued with everyone else's.
A round's own settings (``contests:`` in config.yaml, per server under ``guilds.<id>.contests``) cap its
cost on top: images per try, the cost of one try, tries per member, rounds at once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.core.config import AppConfig
from bot.core.config_store import ConfigStore
from bot.core.contest_config import ContestsConfig, resolve_contests
from bot.core.errors import ContestProblem, NotPermitted, Refused
from bot.core.identity import Requester
from bot.features.contests import refusals
from bot.features.contests.records import OPEN_PHASES, Contest, Entry, Phase, Placing, Rules
from bot.features.contests.store import ContestStore
from bot.scheduler import Clock, Job, Scheduler
from bot.storage import InteractionRef, JobRecord, Storage
from generation.config import ModelConfig
from generation.errors import InvalidRequest
from generation.request import GenerationRequest, estimate_cost, validate

_log = logging.getLogger(__name__)

FEATURE = "contests"  # ``Job.feature`` of the jobs this feature submits (and the only ones it records)
MIN_DURATION_S = 60.0
MAX_DURATION_S = 14 * 24 * 3600.0
_DURATION = re.compile(r"(?:(\d{1,3})\s*d)?\s*(?:(\d{1,4})\s*h)?\s*(?:(\d{1,6})\s*m(?:in)?)?", re.IGNORECASE)
_SIZE = re.compile(r"(\d{2,4})\s*[x×]\s*(\d{2,4})", re.IGNORECASE)
DROPPED_NO_ROUND = "it was never linked to its contest"  # the member reads it, then "Make a new try ..."


def parse_duration(text: str) -> float | None:
    """Seconds in ``30m``, ``2h``, ``1d12h`` (days, hours, minutes); None when it is none of those or out of range."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or not any(match.groups()):
        return None
    days, hours, minutes = (int(part or 0) for part in match.groups())
    seconds = float(days * 86400 + hours * 3600 + minutes * 60)
    return seconds if MIN_DURATION_S <= seconds <= MAX_DURATION_S else None


def parse_size(text: str) -> tuple[int, int] | None:
    match = _SIZE.fullmatch(text.strip())
    return (int(match[1]), int(match[2])) if match is not None else None


def resolve_model(config: AppConfig, name: str | None) -> tuple[str, ModelConfig]:
    """A configured, enabled model by name (the default without one); members never pick a raw source."""
    generation = config.generation
    name = name or generation.default_model
    model = generation.models.get(name)
    if model is None or not model.enabled:
        raise InvalidRequest([f"model {name!r} is not available; allowed: {', '.join(generation.enabled_names())}"])
    return name, model


@dataclass(frozen=True)
class Overview:
    """What /contest status shows one member."""

    contest: Contest
    entries: int
    mine: int
    vote: Entry | None
    placings: list[Placing]


class ContestService:
    def __init__(self, config: ConfigStore, storage: Storage, scheduler: Scheduler, store: ContestStore,
                 clock: Clock) -> None:
        self._config = config
        self._storage = storage
        self._scheduler = scheduler
        self._store = store
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.time(), UTC)

    def settings(self, guild_id: int) -> ContestsConfig:
        config = self._config.current
        guild = config.guilds.get(guild_id)
        return resolve_contests(config.contests, guild.contests if guild is not None else None)

    def _check_moderator(self, requester: Requester) -> None:
        if requester.in_dm:
            raise ContestProblem(refusals.IN_SERVERS_ONLY)
        if not requester.moderates(requester.guild_id, self._config.current):
            raise NotPermitted(refusals.MODERATORS_ONLY)

    # --- rounds -------------------------------------------------------------------------------------
    async def start(self, requester: Requester, *, theme: str, submit: str, vote: str, channel_id: int,
                    max_entries: int = 1, model: str | None = None, steps: int | None = None,
                    size: str | None = None, seed: int | None = None, blind: bool = False,
                    joined_before_voting: bool = False, prize: str | None = None) -> Contest:
        """A new round (moderators): its rules are checked against the model and pinned, its cost capped."""
        self._check_moderator(requester)
        submit_s, vote_s = parse_duration(submit), parse_duration(vote)
        if submit_s is None:
            raise ContestProblem(refusals.bad_duration("submit"))
        if vote_s is None:
            raise ContestProblem(refusals.bad_duration("vote"))
        width = height = None
        if size is not None:
            parsed = parse_size(size)
            if parsed is None:
                raise ContestProblem(refusals.BAD_SIZE)
            width, height = parsed
        config = self._config.current
        name, model_config = resolve_model(config, model)
        settings = self.settings(requester.guild_id)
        sample = self._request(Rules(name, steps or model_config.default_steps, width or model_config.default_width,
                                     height or model_config.default_height, seed), "a contest entry", settings)
        checked = validate(sample, name, model_config, loras=config.generation)  # InvalidRequest names each problem
        assert checked.steps is not None and checked.width is not None and checked.height is not None
        rules = Rules(name, checked.steps, checked.width, checked.height, seed)
        self._check_cost(checked, model_config, settings)
        return await self._store.create(
            guild_id=requester.guild_id, channel_id=channel_id, created_by=requester.user_id, theme=theme.strip(),
            rules=rules, max_entries=max_entries, blind=blind, joined_before_voting=joined_before_voting,
            prize=prize.strip() if prize else None, submit_s=submit_s, vote_s=vote_s,
            max_open=settings.max_open_per_guild)

    async def resolve(self, requester: Requester, number: int | None, *,
                      phases: tuple[Phase, ...] = OPEN_PHASES) -> Contest:
        """The round a command means: its number, else the one running here (the one of this channel when
        several run in the server)."""
        if requester.in_dm:
            raise ContestProblem(refusals.IN_SERVERS_ONLY)
        if number is not None:
            found = await self._store.by_number(requester.guild_id, number)
            if found is None:
                raise ContestProblem(refusals.no_such_contest(number))
            return found
        candidates = await self._store.in_guild(requester.guild_id, phases=phases)
        if len(candidates) > 1:
            channels = {requester.channel_id, requester.parent_channel_id}
            here = [contest for contest in candidates if contest.channel_id in channels]
            if len(here) != 1:
                raise ContestProblem(refusals.pick_one(sorted(contest.number for contest in candidates)))
            candidates = here
        if not candidates:
            raise ContestProblem(refusals.NO_OPEN_CONTEST)
        return candidates[0]

    async def cancel(self, requester: Requester, contest: Contest, reason: str | None) -> Contest:
        self._check_moderator(requester)
        return await self._store.cancel(contest.id, requester.user_id, reason)

    async def disqualify(self, requester: Requester, contest: Contest, number: int,
                         reason: str | None) -> tuple[Entry, int]:
        self._check_moderator(requester)
        return await self._store.disqualify(contest.id, number, requester.user_id, reason)

    # --- making entries -----------------------------------------------------------------------------
    @staticmethod
    def _request(rules: Rules, prompt: str, settings: ContestsConfig) -> GenerationRequest:
        # A same-seed round makes one image, so every entry has exactly the round's seed.
        count = 1 if rules.same_seed else settings.images_per_try
        return GenerationRequest(prompt=prompt, width=rules.width, height=rules.height, steps=rules.steps,
                                 seed=rules.seed, count=count, model=rules.model)

    @staticmethod
    def _check_cost(request: GenerationRequest, model: ModelConfig, settings: ContestsConfig) -> None:
        cost = estimate_cost(request, model.cost_weight)
        cap = settings.max_cost_per_entry
        if cap is not None and cost > cap + 1e-9:
            raise ContestProblem(refusals.too_costly(cost, cap))

    async def check_enter(self, requester: Requester, contest: Contest) -> None:
        """What refuses a try before anything is shown or stored: the round's phase, the member's tries."""
        if contest.phase != "submitting" or self._now() >= contest.submit_ends_at:
            raise ContestProblem(refusals.entries_closed(contest.number, contest.phase, contest.submit_ends_at))
        limit = self.settings(contest.guild_id).max_tries_per_member
        if limit is not None and await self._store.tries(contest.id, requester.user_id) >= limit:
            raise ContestProblem(refusals.tries_used(limit))

    async def enter(self, requester: Requester, contest: Contest, prompt: str,
                    interaction: InteractionRef | None) -> JobRecord:
        """One try: the round's rules and the member's prompt, stored, linked to the round, then admitted
        (a refusal raises here, and the listener records it)."""
        await self.check_enter(requester, contest)
        config = self._config.current
        name, model = resolve_model(config, contest.rules.model)
        settings = self.settings(contest.guild_id)
        request = validate(self._request(contest.rules, prompt, settings), name, model, loras=config.generation)
        self._check_cost(request, model, settings)
        self._scheduler.check_accepting()  # during shutdown storage closes soon: store nothing new
        stored = await self._storage.create_job(
            request, user_id=requester.user_id, guild_id=contest.guild_id, channel_id=requester.channel_id or None,
            role_ids=requester.role_ids, kind="contest", interaction=interaction)
        await self._store.record_job(stored.id, contest.id, requester.user_id)  # before the listener can hear of it
        try:
            self._scheduler.submit(Job.create(
                stored.id, request, user_id=requester.user_id, guild_id=contest.guild_id,
                channel_id=requester.channel_id, role_ids=requester.role_ids, cost_weight=model.cost_weight,
                parent_channel_id=requester.parent_channel_id, feature=FEATURE))
        except Refused:
            await self._store.forget_job(stored.id)  # a refusal costs nothing: not a try (the job stays, refused)
            raise
        return stored

    async def try_of(self, requester: Requester, job_id: str) -> tuple[Contest, JobRecord]:
        """A member's earlier try (for Try again): theirs, and made for a round."""
        stored = await self._storage.get_job(job_id)
        contest_id = await self._store.contest_of_job(job_id) if stored is not None else None
        contest = await self._store.get(contest_id) if contest_id is not None else None
        if stored is None or contest is None:
            raise ContestProblem(refusals.NOT_A_CONTEST_IMAGE)
        if stored.user_id != requester.user_id:
            raise NotPermitted(refusals.NOT_YOUR_TRY)
        return contest, stored

    @staticmethod
    def as_member(requester: Requester, contest: Contest, stored: JobRecord) -> Requester:
        """The requester of a try asked from a direct message (a result delivered there): the server's member
        who made the first try, so the new one is admitted under that server's limits."""
        if not requester.in_dm:
            return requester
        return Requester(requester.user_id, contest.guild_id, stored.channel_id or contest.channel_id,
                         frozenset(stored.role_ids))

    # --- entries ------------------------------------------------------------------------------------
    async def submit_entry(self, requester: Requester, job_id: str, index: int) -> tuple[Contest, Entry, int]:
        """Enter image ``index`` of a try: made by the bot, for this member, in this round."""
        stored = await self._storage.get_job(job_id)
        contest_id = await self._store.contest_of_job(job_id) if stored is not None else None
        if stored is None or stored.kind != "contest" or contest_id is None:
            raise ContestProblem(refusals.NOT_A_CONTEST_IMAGE)
        if stored.user_id != requester.user_id:
            raise NotPermitted(refusals.NOT_YOUR_IMAGE)
        if stored.status != "done":
            raise ContestProblem(refusals.IMAGE_NOT_READY if stored.active else refusals.IMAGE_GONE)
        png = await self._storage.load_result_image(job_id, index) if 0 <= index < len(stored.seeds) else None
        if png is None:
            raise ContestProblem(refusals.IMAGE_GONE)
        return await self._store.add_entry(contest_id, user_id=requester.user_id, job_id=job_id, image_index=index,
                                           prompt=stored.request.prompt, seed=stored.seeds[index], png=png)

    async def withdraw(self, requester: Requester, entry_id: str) -> tuple[Contest, int]:
        contest, _ = await self._store.withdraw(entry_id, requester.user_id)
        return contest, len(await self._store.entries(contest.id, user_id=requester.user_id, active=True))

    async def my_entries(self, requester: Requester, contest: Contest) -> list[tuple[Entry, bytes | None]]:
        entries = await self._store.entries(contest.id, user_id=requester.user_id, active=True)
        return [(entry, await self._store.image(entry.id)) for entry in entries]

    # --- votes --------------------------------------------------------------------------------------
    async def vote(self, requester: Requester, entry_id: str,
                   joined_at: datetime | None) -> tuple[Contest, Entry, Entry | None]:
        entry = await self._store.entry(entry_id)
        contest = await self._store.get(entry.contest_id) if entry is not None else None
        if entry is None or contest is None:
            raise ContestProblem(refusals.ENTRY_REMOVED)
        if requester.guild_id != contest.guild_id:  # a replayed button: members vote in their own server's rounds
            raise ContestProblem(refusals.NOT_HERE)
        if contest.phase != "voting" or self._now() >= contest.vote_ends_at:
            raise ContestProblem(refusals.voting_not_open(contest.number, contest.phase, contest.submit_ends_at))
        # Voting opened at the entries' deadline, whenever the loop got to it.
        if contest.joined_before_voting and (joined_at is None or joined_at >= contest.submit_ends_at):
            raise ContestProblem(refusals.JOINED_TOO_LATE)
        return await self._store.vote(entry_id, requester.user_id)

    async def my_vote(self, requester: Requester, contest_id: str) -> tuple[Contest, Entry | None]:
        contest = await self._store.get(contest_id)
        if contest is None:
            raise ContestProblem(refusals.NO_OPEN_CONTEST)
        return contest, await self._store.vote_of(contest_id, requester.user_id)

    # --- reading ------------------------------------------------------------------------------------
    async def overview(self, requester: Requester, contest: Contest) -> Overview:
        entries = await self._store.entries(contest.id, active=True)
        return Overview(contest, len(entries), sum(1 for entry in entries if entry.user_id == requester.user_id),
                        await self._store.vote_of(contest.id, requester.user_id),
                        await self._store.placings(contest.id) if contest.phase == "closed" else [])

    async def listed(self, requester: Requester) -> list[Contest]:
        if requester.in_dm:
            raise ContestProblem(refusals.IN_SERVERS_ONLY)
        return await self._store.in_guild(requester.guild_id, limit=10)

    # --- restarts -----------------------------------------------------------------------------------
    async def resume(self) -> tuple[list[JobRecord], list[JobRecord]]:
        """Readmit this feature's jobs that were queued or running when the bot stopped (no charge again);
        drop those that no longer fit the config or were never linked to a round (their end is owed to
        their member, who is told privately)."""
        resumed: list[JobRecord] = []
        dropped: list[JobRecord] = []
        config = self._config.current
        for stored in await self._storage.requeue_interrupted():  # /imagine's resume may have run it first
            if stored.kind != "contest":
                continue
            contest_id = await self._store.contest_of_job(stored.id)
            try:
                if contest_id is None:
                    raise InvalidRequest([DROPPED_NO_ROUND])
                name, model = resolve_model(config, stored.request.model)
                request = validate(stored.request, name, model, loras=config.generation)
            except InvalidRequest as exc:
                reason = exc.problems[0] if contest_id is None else f"it no longer fits this bot's settings ({exc})"
                dropped.append(await self._storage.update_status(stored.id, "dropped", error=reason))
                continue
            self._scheduler.submit(Job.create(
                stored.id, request, user_id=stored.user_id, guild_id=stored.guild_id or 0,
                channel_id=stored.channel_id or 0, role_ids=frozenset(stored.role_ids),
                cost_weight=model.cost_weight, feature=FEATURE), readmit=True)
            resumed.append(stored)
        if resumed or dropped:
            _log.info("contests: resumed %d entry job(s) after a restart, dropped %d", len(resumed), len(dropped))
        return resumed, dropped
