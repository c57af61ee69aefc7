"""Two servers for the /mod tests: Art Club (bob moderates; alice, carol and dave are members) and Photo Club
(dave moderates; alice is a member). Each server's "Moderator" role is in its ``moderator_roles``; nobody is an
admin by Manage Server. Test modules take ``fake`` from here (``from tests.moderation_helpers import fake``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest_asyncio

from bot.app import ImagineBot
from bot.core.config import AppConfig, GuildConfig
from bot.core.config_store import ConfigStore
from bot.features.moderation.repository import AuditEntry, ModerationStore
from tests.bot_harness import WAIT_S, GateExecutor, running_bot, tiny_app_config
from tests.fake_discord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, FakeRole, FakeUser, StoredMessage
from tests.fake_discord.models import MEMBER_PERMISSIONS
from tests.frozen_clock import FrozenClock

ART, PHOTO = "Art Club", "Photo Club"
NOT_A_MODERATOR = ("🚫 Only this server's moderators can use /mod: members with the Manage Server permission or a "
                   "moderator role. Nothing was changed.")


def two_servers() -> list[FakeGuild]:
    owner = FakeUser("olive")
    users = {name: FakeUser(name) for name in ("alice", "bob", "carol", "dave")}
    art_mod = FakeRole("Moderator", permissions=MEMBER_PERMISSIONS, position=1)
    photo_mod = FakeRole("Moderator", permissions=MEMBER_PERMISSIONS, position=1)
    art = FakeGuild(ART, channels=[FakeChannel("general", position=0), FakeChannel("imagine", position=1)],
                    roles=[art_mod, FakeRole("Patron", permissions=MEMBER_PERMISSIONS, position=2)],
                    owner_id=owner.id,
                    members=[FakeMember(users["alice"]), FakeMember(users["bob"], roles=[art_mod]),
                             FakeMember(users["carol"]), FakeMember(users["dave"]), FakeMember(owner)])
    photo = FakeGuild(PHOTO, channels=[FakeChannel("lobby", position=0)], roles=[photo_mod], owner_id=owner.id,
                      members=[FakeMember(users["alice"]), FakeMember(users["dave"], roles=[photo_mod]),
                               FakeMember(owner)])
    return [art, photo]


@pytest_asyncio.fixture
async def fake(clock: FrozenClock) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(guilds=two_servers(), default_timeout=WAIT_S, clock=clock) as started:
        with started.patch_discord():
            yield started
    started.assert_no_failures()


def bot_on(fake: FakeDiscord, data: Path, config: AppConfig | ConfigStore, **options: Any) -> Any:
    """The bot with a GPU that never finishes (``GateExecutor``): requests stay queued or running, and a shutdown
    hands them back at once (nothing waits for the gate)."""
    options.setdefault("executor", GateExecutor())
    return running_bot(fake, data, config, drain_timeout_s=0, **options)


def admitted(message: StoredMessage) -> bool:
    """A request that was admitted: its public status message (not a private refusal)."""
    return not message.ephemeral and message.content.startswith(("Starting", "Queued"))


def role_id(fake: FakeDiscord, guild: str, name: str) -> int:
    role = fake.guild(guild).role(name)
    assert role is not None
    return role.id


def two_server_config(fake: FakeDiscord, **sections: Any) -> AppConfig:
    """The tiny test config, each server with its Moderator role; ``art``/``photo`` override their entries."""
    art = sections.pop("art", GuildConfig())
    photo = sections.pop("photo", GuildConfig())
    guilds = {fake.guild(ART).id: art.model_copy(update={"moderator_roles": [role_id(fake, ART, "Moderator")]}),
              fake.guild(PHOTO).id: photo.model_copy(update={"moderator_roles": [role_id(fake, PHOTO, "Moderator")]})}
    return tiny_app_config(fake, guilds=guilds, **sections)


async def mod(fake: FakeDiscord, command: str, options: dict[str, Any] | None = None, *, user: str = "bob",
              guild: str = ART, channel: str | FakeChannel | None = None) -> StoredMessage:
    """``user`` runs ``/mod <command>`` in ``guild`` (in ``channel``, else its first); returns the answer, which is
    checked to be private."""
    handle = await fake.slash(f"mod {command}", options or {}, user=user, guild=guild, channel=channel)
    answer = await handle.wait_original(lambda message: not message.loading)
    assert answer.ephemeral, f"/mod {command} answered publicly: {answer.content!r}"
    return answer


async def audit_rows(bot: ImagineBot, guild: int | None = None) -> list[AuditEntry]:
    """The audit entries of a server (default: Art Club), oldest first, as they were stored."""
    guild_id = guild if guild is not None else next(iter(bot.services.config.current.guilds))
    store = ModerationStore(bot.services.storage, now=lambda: datetime.now(UTC))
    return list(reversed(await store.audit(guild_id, limit=1000)))


def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
