"""End-to-end tests of the fake Discord with a real discord.py client over loopback."""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest
from aiohttp import web
from discord import app_commands
from PIL import Image

from tests.fake_discord import FakeDiscord, FakeRejected, StoredMessage, run_client
from tests.fake_discord.rest import Ctx, json_response
from tests.fake_discord.rest_routes import MiscRoutes
from tests.fake_discord.validation import SpecMissing, spec_required, spec_status_line

PROMPTS = ["a cat", "a castle", "a cathedral", "a dog"]


def png_bytes(color: str = "red", size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


class AgainView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Again", custom_id="again", style=discord.ButtonStyle.primary)
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button[AgainView]) -> None:
        await interaction.response.send_message(f"again, {interaction.user.name}!", ephemeral=True)


class SamplerView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.select(
        custom_id="sampler", options=[discord.SelectOption(label="euler"), discord.SelectOption(label="ddim")]
    )
    async def sampler(self, interaction: discord.Interaction, select: discord.ui.Select[SamplerView]) -> None:
        await interaction.response.edit_message(content=f"sampler={select.values[0]}")  # type 7

    @discord.ui.button(label="Slow", custom_id="slow")
    async def slow(self, interaction: discord.Interaction, button: discord.ui.Button[SamplerView]) -> None:
        await interaction.response.defer()  # type 6: deferred update of this message
        await interaction.edit_original_response(content="slow done")


class SettingsModal(discord.ui.Modal, title="Settings"):
    steps: discord.ui.TextInput[SettingsModal] = discord.ui.TextInput(label="Steps", custom_id="steps")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"steps={self.steps.value}", view=SamplerView())


class TinyBot(discord.Client):
    """A minimal bot shaped like ours: defer, progress edits, followup with a PNG and a view."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.errors: list[Exception] = []

        @self.tree.command(description="Generate an image")
        @app_commands.describe(prompt="What to draw", steps="Sampling steps")
        async def imagine(
            interaction: discord.Interaction,
            prompt: str,
            steps: app_commands.Range[int, 1, 50] = 4,
            init_image: discord.Attachment | None = None,
        ) -> None:
            await interaction.response.defer(thinking=True)
            try:
                source = await init_image.read() if init_image else None
                await interaction.edit_original_response(content=f"Generating {prompt!r}: 0/{steps}")
                await interaction.edit_original_response(content=f"Generated {prompt!r}")
                size = 2048 if source is None else 4096  # big enough to trip a small upload limit
                await interaction.followup.send(
                    f"{interaction.user.mention} here is {prompt!r}",
                    file=discord.File(io.BytesIO(png_bytes(size=size)), "result.png"),
                    view=AgainView(),
                    allowed_mentions=discord.AllowedMentions(users=[interaction.user]),
                )
            except discord.HTTPException as e:
                self.errors.append(e)

        @imagine.autocomplete("prompt")
        async def prompt_complete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            return [app_commands.Choice(name=p, value=p) for p in PROMPTS if p.startswith(current)]

        @self.tree.command(description="Open the settings")
        async def settings(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(SettingsModal())

        admin = app_commands.Group(name="admin", description="Moderation")

        @admin.command(description="Ban a user from /imagine")
        async def ban(interaction: discord.Interaction, user: discord.Member) -> None:
            await interaction.response.send_message(f"banned {user.name}", ephemeral=True)

        self.tree.add_command(admin)

    async def setup_hook(self) -> None:
        self.add_view(AgainView())  # persistent: the button keeps working after a restart
        await self.tree.sync()


def need_spec(fake: FakeDiscord) -> None:
    """Skip a spec test where the spec is missing, but fail it under CI=true (CI must validate)."""
    if fake.validator is None:
        reason = fake.validation_skipped_reason or "no spec"
        if spec_required():
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


@pytest.fixture
async def bot(fake_discord: FakeDiscord) -> AsyncIterator[TinyBot]:
    async with run_client(fake_discord, TinyBot()) as client:
        assert isinstance(client, TinyBot)
        yield client


async def test_slash_defer_edit_followup_and_click(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    fake = fake_discord
    assert sorted(c["name"] for c in fake.commands()) == ["admin", "imagine", "settings"]
    alice = fake.user("alice")

    handle = await fake.slash("imagine", {"prompt": "a cat", "steps": 3}, user=alice)
    response = await handle.wait_response()
    assert response.response_type == 5  # deferred, "thinking"
    followup = await handle.wait_followup()

    original = handle.original
    assert original is not None and not original.loading
    assert original.contents == ["", "Generating 'a cat': 0/3", "Generated 'a cat'"]
    assert followup.content == f"<@{alice.id}> here is 'a cat'"
    assert followup.custom_ids() == ["again"]
    png = followup.attachment("result.png")
    assert png.content_type == "image/png" and png.size == len(png.data)
    with Image.open(io.BytesIO(png.data)) as img:
        assert img.format == "PNG" and img.size == (2048, 2048)
    # The bot sent allowed_mentions with the followup and none with the progress edits.
    sent = {(r.method, r.sent) for r in fake.allowed_mentions if r.message_id == followup.id}
    assert sent == {("POST", True)}
    assert followup.allowed_mentions is not None and followup.allowed_mentions["users"] == [alice.id]
    assert not [r for r in fake.allowed_mentions if r.method == "PATCH" and r.sent]

    click = await fake.click(followup, "again", user="bob")
    clicked = await click.wait_response()
    assert clicked.response_type == 4
    assert click.original is not None
    assert click.original.content == "again, bob!" and click.original.ephemeral
    assert fake.failures == []


async def test_message_json_matches_the_spec(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    # The fake's own answers must look like Discord's, or discord.py parses a fiction.
    fake = fake_discord
    need_spec(fake)
    assert fake.validator is not None
    handle = await fake.slash("imagine", {"prompt": "a dog"})
    msg = await handle.wait_followup()
    assert [e.message for e in fake.validator.validate_component("MessageResponse", msg.to_json())] == []
    callback = fake.requests_to("POST", "/interactions/{interaction_id}/{interaction_token}/callback")[0]
    errors = fake.validator.validate_component("InteractionCallbackResponse", callback.response)
    assert [e.message for e in errors] == []


async def test_autocomplete_returns_the_bot_choices(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    choices = await fake_discord.autocomplete("imagine", "prompt", {"prompt": "a ca"})
    assert [c["value"] for c in choices] == ["a cat", "a castle", "a cathedral"]


async def test_attachment_option_and_upload_limit(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    fake = fake_discord
    upload = fake.serve_attachment(png_bytes("blue"), "init.png")
    handle = await fake.slash(
        "imagine", {"prompt": "a cat"}, attachments={"init_image": upload}, attachment_size_limit=10_000
    )
    await handle.wait_original(lambda m: m.content == "Generated 'a cat'")
    await fake.wait_until(lambda: bot.errors, what="the bot to get an error")
    assert isinstance(bot.errors[0], discord.HTTPException) and bot.errors[0].status == 413
    assert fake.downloads == [f"/attachments/{upload.id}/init.png"]
    failures = fake.pop_failures()
    assert len(failures) == 1 and "upload limit" in failures[0]


async def test_expired_token_gets_401_without_failure(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    fake = fake_discord
    handle = await fake.slash("imagine", {"prompt": "a cat"})
    await handle.wait_response()
    handle.expire()
    await fake.wait_until(lambda: bot.errors, what="the bot to get an error")
    error = bot.errors[0]
    assert isinstance(error, discord.HTTPException) and (error.status, error.code) == (401, 50027)
    assert fake.failures == []


async def test_buttons_survive_a_restart(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    async with run_client(fake, TinyBot()):
        handle = await fake.slash("imagine", {"prompt": "a cat"})
        message = await handle.wait_followup()
    async with run_client(fake, TinyBot()):
        assert fake.identify_count == 2
        click = await fake.click(message, "again", user="bob")
        assert (await click.wait_response()).response_type == 4


async def test_late_first_response_is_a_failure() -> None:
    async with FakeDiscord(response_deadline=0.0) as fake:
        with fake.patch_discord():
            async with run_client(fake, TinyBot()):
                handle = await fake.slash("admin ban", {"user": "alice"})
                await fake.wait_until(lambda: fake.failures, what="the late callback")
    assert not handle.record.responded
    assert len(fake.failures) == 1 and "limit 0.0s" in fake.failures[0]


async def test_modal_select_and_deferred_update(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    fake = fake_discord
    handle = await fake.slash("settings")
    assert (await handle.wait_response()).modal is not None
    submitted = await handle.submit_modal({"steps": "12"})
    message = await submitted.wait_original()
    assert message.content == "steps=12" and message.custom_ids() == ["sampler", "slow"]

    picked = await fake.click(message, "sampler", values=["ddim"])
    assert (await picked.wait_response()).response_type == 7
    assert fake.message(message.id).content == "sampler=ddim"

    slow = await fake.click(message, "slow")
    await slow.wait_original(lambda m: m.content == "slow done")
    assert slow.response_type == 6 and slow.original is fake.message(message.id)
    assert fake.message(message.id).contents == ["steps=12", "sampler=ddim", "slow done"]


async def test_subcommand_with_user_option(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    handle = await fake_discord.slash("admin ban", {"user": "alice"}, user="bob")
    reply = await handle.wait_original()
    assert reply.content == "banned alice" and reply.ephemeral


async def test_second_acknowledgement_is_a_failure(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    fake = fake_discord
    handle = await fake.slash("admin ban", {"user": "alice"})
    await handle.wait_response()
    url = f"{fake.api_base}/interactions/{handle.id}/{handle.token}/callback"
    async with aiohttp.ClientSession() as session, session.post(url, json={"type": 5}) as resp:
        assert resp.status == 400
        assert (await resp.json())["code"] == 40060
    failures = fake.pop_failures()
    assert len(failures) == 1 and "second callback" in failures[0]


@pytest.mark.parametrize(
    ("body", "where", "needs_spec"),
    [
        ({"content": "x" * 2001}, "content", False),  # Discord's 2000-character limit for bots
        ({"content": "hi", "embeds": [{"title": "t"}] * 11}, "embeds", True),  # schema: maxItems 10
        ({"content": 5}, "content", True),  # schema: type
    ],
)
async def test_invalid_body_is_a_failure(
    fake_discord: FakeDiscord, body: dict[str, object], where: str, needs_spec: bool
) -> None:
    fake = fake_discord
    if needs_spec:
        need_spec(fake)
    channel = fake.channel("general")
    headers = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession() as session:
        url = f"{fake.api_base}/channels/{channel.id}/messages"
        async with session.post(url, json=body, headers=headers) as resp:
            assert resp.status == 400
            assert resp.headers["Content-Type"] == "application/json"
            error = await resp.json()
    assert error["code"] == 50035 and where in error["errors"]
    failures = fake.pop_failures()
    assert len(failures) == 1 and where in failures[0]
    assert fake.channel_messages(channel) == []


async def test_unknown_route_is_404_and_failure(fake_discord: FakeDiscord) -> None:
    url = f"{fake_discord.api_base}/guilds/1/audit-logs"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 404
        assert (await resp.json())["message"] == "404: Not Found"
    failures = fake_discord.pop_failures()
    assert len(failures) == 1 and "not implemented" in failures[0]


async def test_patching_is_restored_and_validation_can_be_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    monkeypatch.setenv("DISCORD_OPENAPI_SPEC", "/nonexistent/openapi.json")
    monkeypatch.delenv("CI", raising=False)
    fake = FakeDiscord()
    assert fake.validator is None and "/nonexistent/openapi.json" in (fake.validation_skipped_reason or "")
    async with fake:
        with fake.patch_discord():
            assert fake.api_base == discord.http.Route.BASE
            assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == fake.gateway_url
            assert fake.env["DISCORD_API_BASE"].startswith("http://127.0.0.1:")
    assert (base, gateway) == (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)


async def test_channel_messages_and_gateway_resume(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    fake = fake_discord
    channel = bot.get_channel(fake.channel("imagine").id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("hello", file=discord.File(io.BytesIO(png_bytes()), "x.png"))
    edited = await sent.edit(content="hello again", attachments=[])
    stored: StoredMessage = fake.message(sent.id)
    assert stored.contents == ["hello", "hello again"] and stored.attachments == []
    assert edited.content == "hello again"
    await fake.reconnect_gateway()
    await fake.wait_until(
        lambda: fake.gateway and any(p["t"] == "RESUMED" for s in fake.gateway.sessions.values() for p in s.sent),
        what="RESUMED",
    )
    await sent.delete()
    assert fake.channel_messages("imagine") == []


class SettableClock:
    """Wall-clock time that moves only when the test sets ``now``."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


class PingBot(discord.Client):
    """Answers /ping and keeps the interaction, so the test decides when to follow up."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.answered: list[discord.Interaction] = []

        @self.tree.command(description="Pong")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong")
            self.answered.append(interaction)

    async def setup_hook(self) -> None:
        await self.tree.sync()


async def test_interaction_token_expires_15_minutes_after_dispatch_on_the_fake_clock() -> None:
    clock = SettableClock()
    async with FakeDiscord(clock=clock) as fake:
        with fake.patch_discord():
            async with run_client(fake, PingBot()) as client:
                assert isinstance(client, PingBot)
                handle = await fake.slash("ping")
                await handle.wait_original()
                interaction = await fake.wait_until(lambda: client.answered[-1] if client.answered else None)
                # Snowflakes carry the fake's clock, so discord.py's created_at agrees with it.
                assert interaction.created_at == datetime.fromtimestamp(clock.now, UTC)

                clock.now += 14 * 60 + 59  # 14 min 59 s: the token still works
                await interaction.followup.send("still in time")
                clock.now += 2  # 15 min 1 s
                with pytest.raises(discord.HTTPException) as followup:
                    await interaction.followup.send("too late")
                with pytest.raises(discord.HTTPException) as edit:
                    await interaction.edit_original_response(content="too late")
    assert (followup.value.status, followup.value.code) == (401, 50027)
    assert (edit.value.status, edit.value.code) == (401, 50027)
    assert [m.content for m in handle.followups] == ["still in time"]
    assert handle.original is not None and handle.original.contents == ["pong"]
    assert fake.failures == []  # an expired token is Discord's answer, not a fake failure


async def test_click_on_a_deleted_message_is_rejected(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    fake = fake_discord
    handle = await fake.slash("imagine", {"prompt": "a cat"})
    followup = await handle.wait_followup()
    channel = bot.get_channel(followup.channel_id)
    assert isinstance(channel, discord.TextChannel)
    await channel.get_partial_message(followup.id).delete()
    assert fake.message(followup.id).deleted
    dispatched = len(fake.interactions)

    clicks = [fake.click(followup, "again"), fake.click(followup.id, "again"), handle.click("again")]
    for click in clicks:
        with pytest.raises(FakeRejected, match=rf"message {followup.id}, which was deleted"):
            await click
    assert len(fake.interactions) == dispatched  # nothing reached the bot


def test_missing_spec_under_ci_fails_construction(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "openapi.json"
    monkeypatch.setenv("DISCORD_OPENAPI_SPEC", str(missing))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(SpecMissing) as caught:
        FakeDiscord()
    assert str(missing) in str(caught.value) and "DISCORD_OPENAPI_SPEC" in str(caught.value)
    assert FakeDiscord(validate=False).validator is None  # switching validation off on purpose still works


def test_missing_spec_outside_ci_is_one_status_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "openapi.json"
    monkeypatch.setenv("DISCORD_OPENAPI_SPEC", str(missing))
    monkeypatch.delenv("CI", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning per fake any more
        fake = FakeDiscord()
    assert fake.validator is None
    line = spec_status_line()
    assert line is not None and str(missing) in line and "validation is OFF" in line and "DISCORD_OPENAPI_SPEC" in line

    missing.write_text(json.dumps({"openapi": "3.1.0", "paths": {}}))
    assert spec_status_line() is None
    assert FakeDiscord().validator is not None


@pytest.mark.parametrize(
    ("query", "status", "failure"),
    [
        ("wait=maybe", 400, "wait: 'maybe' is not of type 'boolean'"),
        ("wait=1&thread_id=abc", 400, "thread_id: 'abc' does not match"),
        ("wait=true&wiat=1", 200, "unknown query parameter(s) ['wiat']"),  # Discord ignores it; still a mistake
    ],
)
async def test_query_parameters_are_checked_against_the_spec(
    fake_discord: FakeDiscord, bot: TinyBot, query: str, status: int, failure: str
) -> None:
    fake = fake_discord
    need_spec(fake)
    handle = await fake.slash("admin ban", {"user": "alice"})
    await handle.wait_response()
    url = f"{fake.api_base}/webhooks/{fake.application_id}/{handle.token}?{query}"
    async with aiohttp.ClientSession() as session, session.post(url, json={"content": "hi"}) as resp:
        assert resp.status == status
        body = await resp.json()
    if status == 400:
        assert body["code"] == 50035 and query.split("&")[-1].split("=")[0] in body["errors"]
        assert handle.followups == []
    else:
        assert [m.content for m in handle.followups] == ["hi"]
    failures = fake.pop_failures()
    assert len(failures) == 1 and failure in failures[0]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (json_response({"id": "general", "type": "text"}), "is not valid under any of the given schemas"),
        (web.Response(status=200), "the spec says this status has a JSON body, but the fake sent none"),
        (web.Response(status=204), "status 204 is not one the spec lists"),
    ],
)
async def test_a_fake_response_that_breaks_the_spec_is_reported(
    monkeypatch: pytest.MonkeyPatch, answer: web.Response, problem: str
) -> None:
    async def broken(self: MiscRoutes, ctx: Ctx) -> web.StreamResponse:
        return answer

    monkeypatch.setattr(MiscRoutes, "get_channel", broken)
    async with FakeDiscord() as fake:
        need_spec(fake)
        url = f"{fake.api_base}/channels/{fake.channel('general').id}"
        headers = {"Authorization": f"Bot {fake.token}"}
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
            assert resp.status == answer.status  # the bot still gets the answer; the fake is blamed
    failures = fake.pop_failures()
    assert len(failures) == 1
    assert "fake Discord's own response to GET /channels/{channel_id} does not match the spec" in failures[0]
    assert "FAKE" in failures[0] and problem in failures[0]
