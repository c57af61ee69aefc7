"""A member's try, shown to them alone: their images with a Submit button each and Try again, or why there are
none. It goes as an ephemeral followup of the command while its token lives (15 minutes), else as a direct
message. The job is recorded delivered once Discord accepted it; one that ended while the bot was down is
delivered at the next start (``deliver_owed``). A kill between the message and its record repeats the private
message once, which only its member sees.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import discord

from bot.discord_ui.images import encode_to_fit, read_parameters, upload_limit
from bot.discord_ui.interactions import NO_MENTIONS
from bot.discord_ui.texts import failure_text
from bot.features.contests import texts
from bot.features.contests.store import ContestStore
from bot.features.contests.views import try_view
from bot.storage import JobKind, JobRecord, Storage
from generation.imagefiles import open_image

_log = logging.getLogger(__name__)
KINDS: tuple[JobKind, ...] = ("contest",)  # the stored jobs this feature delivers (``owed_deliveries``)


class PrivateDelivery:
    def __init__(self, client: discord.Client, storage: Storage, store: ContestStore,
                 now: Callable[[], datetime]) -> None:
        self._client = client
        self._storage = storage
        self._store = store
        self._now = now
        # One delivery of a job at a time: a try that ends just after a restart is delivered by its listener
        # while the start-up's sweep of owed tries may be looking at it too; the second one finds it delivered.
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # job id -> (its lock, [callers holding it])

    async def deliver_owed(self) -> int:
        """Deliver every try that ended and was not shown (a restart, a failed send); returns how many."""
        owed = await self._storage.owed_deliveries(self._now(), kinds=KINDS)
        for stored in owed:
            await self.deliver(stored)
        return len(owed)

    async def deliver(self, stored: JobRecord, pngs: list[bytes] | None = None) -> None:
        lock, callers = self._locks.setdefault(stored.id, (asyncio.Lock(), [0]))
        callers[0] += 1
        try:
            async with lock:
                await self._deliver(stored, pngs)
        finally:
            callers[0] -= 1
            if not callers[0]:
                del self._locks[stored.id]

    async def _deliver(self, stored: JobRecord, pngs: list[bytes] | None) -> None:
        fresh = await self._storage.get_job(stored.id)
        if fresh is None or fresh.delivery != "owed":
            return  # shown already (a repeat after a restart), or nothing to show
        try:
            content, files, view = await self._message(fresh, pngs)
            sent = await self._followup(fresh, content, files, view) or await self._direct(fresh, content, files, view)
        except Exception:
            _log.exception("could not build or send the private result of contest job %s", fresh.id)
            sent = False
        try:
            if sent:
                await self._storage.record_delivery(fresh.id)
            else:
                _log.error("contest job %s: its member could not be shown the result (no live token, no DM)",
                           fresh.id)
                await self._storage.delivery_failed(fresh.id, retry_at=None)
        except Exception:  # stays owed: the next start shows it again, to its member only
            _log.exception("could not record the delivery of contest job %s", fresh.id)

    async def _message(self, stored: JobRecord, pngs: list[bytes] | None) -> tuple[
            str, list[tuple[bytes, str]], discord.ui.View | None]:
        contest_id = await self._store.contest_of_job(stored.id)
        contest = await self._store.get(contest_id) if contest_id is not None else None
        if stored.status != "done" or contest is None:
            return texts.try_failed(failure_text(stored.status, stored.error)), [], None
        if pngs is None:
            loaded = [await self._storage.load_result_image(stored.id, index) for index in range(len(stored.seeds))]
            pngs = [png for png in loaded if png is not None]
        if not pngs:
            return texts.try_failed(failure_text("failed", "the images are no longer stored")), [], None
        entered = len(await self._store.entries(contest.id, user_id=stored.user_id, active=True))
        guild = self._client.get_guild(contest.guild_id)
        limit = upload_limit(guild.filesize_limit if guild is not None else None)
        files = [await fit_upload(png, f"image_{index + 1}", limit) for index, png in enumerate(pngs)]
        return texts.try_result(contest, stored.request.prompt, entered, len(pngs)), files, try_view(
            stored.id, len(pngs))

    async def _followup(self, stored: JobRecord, content: str, files: list[tuple[bytes, str]],
                        view: discord.ui.View | None) -> bool:
        interaction = stored.interaction
        if interaction is None or not interaction.usable(self._now()):
            return False
        webhook = discord.Webhook.partial(interaction.application_id, interaction.token, client=self._client)
        # An interaction's webhook is an application webhook (as discord.py's own Interaction.followup builds it):
        # only that kind may send ephemeral messages, and a partial one does not know it is one.
        webhook.type = discord.WebhookType.application
        try:
            await webhook.send(content, files=_files(files), ephemeral=True, allowed_mentions=NO_MENTIONS,
                               **_with_view(view))
        except discord.HTTPException as exc:
            _log.info("contest job %s: the followup failed (%s); trying a direct message", stored.id, exc)
            return False
        return True

    async def _direct(self, stored: JobRecord, content: str, files: list[tuple[bytes, str]],
                      view: discord.ui.View | None) -> bool:
        try:
            user = self._client.get_user(stored.user_id) or await self._client.fetch_user(stored.user_id)
            await user.send(content, files=_files(files), allowed_mentions=NO_MENTIONS, **_with_view(view))
        except discord.HTTPException as exc:
            _log.warning("contest job %s: could not message its member directly: %s", stored.id, exc)
            return False
        return True


def _with_view(view: discord.ui.View | None) -> dict[str, Any]:
    return {"view": view} if view is not None else {}


def _files(files: list[tuple[bytes, str]]) -> list[discord.File]:
    return [discord.File(io.BytesIO(data), filename=name) for data, name in files]


async def fit_upload(png: bytes, basename: str, limit: int) -> tuple[bytes, str]:
    """The PNG as it is when it fits the server's upload limit; else re-encoded to fit, in a worker thread."""
    if len(png) <= limit:
        return png, f"{basename}.png"
    encoded = await asyncio.to_thread(
        lambda: encode_to_fit(open_image(png), limit, read_parameters(png) or "", basename=basename))
    return encoded.data, encoded.filename
