"""REST plumbing: routing, body parsing, auth, size limit and schema validation.

Every request under /api/v10 goes through ``RestApi.handle``, which records it, checks it
the way Discord would (body and query string against the spec), and only then calls the
route's handler.  Anything the bot does wrong is appended to ``state.failures`` and answered
with a Discord-style error; an unknown query parameter is a failure too, but answered normally
(Discord ignores it).  The fake's own 2xx answers are checked against the spec's response
schemas, so a fake that drifts from Discord fails loudly instead of teaching discord.py a fiction.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import BodyPartReader, web

from .records import RecordedRequest, UploadedFile
from .state import FakeState
from .validation import SpecValidator, discord_errors, error_path, extra_checks

API_PREFIX = "/api/v10"


class DiscordHTTPError(Exception):
    """Raised by handlers; becomes ``{"code", "message"[, "errors"]}`` with ``status``."""

    def __init__(self, status: int, code: int, message: str, *, fail: str | None = None, errors: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fail = fail  # failure text to record; None for errors a test provoked on purpose
        self.errors = errors


def json_response(data: Any, status: int = 200) -> web.Response:
    # Exactly "application/json": discord.py's json_or_text rejects a charset suffix.
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json")


def error_body(code: int, message: str, errors: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if errors is not None:
        body["errors"] = errors
    return body


@dataclass
class Ctx:
    request: web.Request
    params: dict[str, str]
    body: Any
    uploads: list[UploadedFile]
    record: RecordedRequest
    query: dict[str, str] = field(default_factory=dict)

    def int_param(self, name: str) -> int:
        value = self.params[name]
        if not value.isdigit():
            raise DiscordHTTPError(
                404, 0, "404: Not Found", fail=f"{self.record.path}: {name} {value!r} is not a snowflake"
            )
        return int(value)


Handler = Callable[[Ctx], Awaitable[web.StreamResponse]]


@dataclass
class Route:
    method: str
    template: str
    regex: re.Pattern[str]
    handler: Handler
    auth: bool  # webhook/interaction-token routes carry no bot token


class RestApi:
    def __init__(self, state: FakeState, validator: SpecValidator | None) -> None:
        self.state = state
        self.validator = validator
        self._routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler, *, auth: bool = True) -> None:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        self._routes.append(Route(method, template, re.compile(f"^{pattern}$"), handler, auth))
        # Literal segments (@me, @original) win over {param} ones.
        self._routes.sort(key=lambda r: r.template.count("{"))

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self._routes:
            m = route.regex.match(path)
            if m and route.method == method:
                return route, m.groupdict()
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path[len(API_PREFIX) :] or "/"
        record = RecordedRequest(request.method, path, dict(request.query), None, [])
        self.state.requests.append(record)
        try:
            response = await self._handle(request, record)
        except (ConnectionResetError, aiohttp.ClientPayloadError):
            # The client went away mid-request (a bot killed while it uploaded): Discord sees a dropped
            # connection, not a request; nothing was changed and nobody reads an answer.
            record.status = 499
            raise
        except DiscordHTTPError as e:
            if e.fail:
                self.state.fail(f"{request.method} {path}: {e.fail}")
            response = json_response(error_body(e.code, e.message, e.errors), e.status)
        except Exception:  # a bug in the fake itself: make it loud, but don't let discord.py retry a 5xx
            self.state.fail(f"{request.method} {path}: fake_discord crashed:\n{traceback.format_exc()}")
            response = json_response(error_body(0, "fake_discord internal error"), 400)
        record.status = response.status
        has_body = isinstance(response, web.Response) and bool(response.body)
        if has_body and isinstance(response, web.Response) and response.content_type == "application/json":
            assert isinstance(response.body, bytes)
            record.response = json.loads(response.body)
        if 200 <= response.status < 300:
            self._check_response(record, has_body)
        self.state.changed()
        return response

    def _check_response(self, record: RecordedRequest, has_body: bool) -> None:
        op = self.validator.operation(record.method, record.path) if self.validator is not None else None
        if self.validator is None or op is None:
            return
        problems = self.validator.validate_response(op, record.status or 0, record.response, has_body)
        if problems:
            self.state.fail(
                f"fake Discord's own response to {record.method} {op.template} does not match the spec "
                f"(a bug in the FAKE, not in the bot): {'; '.join(problems)}"
            )

    async def _handle(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        body, uploads = await parse_body(request)
        record.json, record.files = body, uploads
        matched = self._match(request.method, record.path)
        if matched is None:
            raise DiscordHTTPError(404, 0, "404: Not Found", fail="route not implemented by the fake (or wrong path)")
        route, params = matched
        record.route = route.template
        if route.auth and request.headers.get("Authorization") != f"Bot {self.state.token}":
            raise DiscordHTTPError(401, 0, "401: Unauthorized", fail="missing or wrong bot token")
        self._check_sizes(record.path, uploads)
        self._validate(request.method, record.path, route.template, body)
        self._validate_query(request, record)
        return await route.handler(Ctx(request, params, body, uploads, record, dict(request.query)))

    def _check_sizes(self, path: str, uploads: list[UploadedFile]) -> None:
        limit = self._size_limit(path)
        for upload in uploads:
            if len(upload.data) > limit:
                raise DiscordHTTPError(
                    413,
                    40005,
                    "Request entity too large",
                    fail=f"file {upload.filename!r} is {len(upload.data)} bytes, over the {limit}-byte upload limit",
                )

    def _size_limit(self, path: str) -> int:
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[0] in ("webhooks", "interactions"):
            interaction = self.state.by_token.get(parts[2])
            if interaction is not None:
                return interaction.attachment_size_limit
        if len(parts) >= 2 and parts[0] == "channels" and parts[1].isdigit():
            guild = self.state.guild_of_channel(int(parts[1]))
            return self.state.size_limit(guild.id if guild else None)
        return self.state.attachment_size_limit

    def _validate(self, method: str, path: str, template: str, body: Any) -> None:
        if body is None:
            return
        problems = extra_checks(template, body)
        op = self.validator.operation(method, path) if self.validator is not None else None
        if self.validator is not None and op is not None:
            problems = [(error_path(e), describe(e)) for e in self.validator.validate(op, body)] + problems
        if problems:
            text = "; ".join(f"{'.'.join(p) or '<body>'}: {m}" for p, m in problems)
            raise DiscordHTTPError(
                400,
                50035,
                "Invalid Form Body",
                errors=discord_errors(problems),
                fail=f"invalid body for {method} {template} (openapi.json + Discord rules): {text}",
            )


    def _validate_query(self, request: web.Request, record: RecordedRequest) -> None:
        op = self.validator.operation(request.method, record.path) if self.validator is not None else None
        if self.validator is None or op is None:
            return
        query = {name: request.query.getall(name) for name in request.query}
        problems, unknown = self.validator.validate_query(op, query)
        if unknown:
            # Discord ignores unknown parameters, so the request goes on; but it is a mistake (a typo?).
            self.state.fail(
                f"{request.method} {record.path}: unknown query parameter(s) {unknown} for {op.template} "
                f"(openapi.json lists {sorted(op.query) or 'none'})"
            )
        if problems:
            text = "; ".join(f"{'.'.join(p)}: {m}" for p, m in problems)
            raise DiscordHTTPError(
                400,
                50035,
                "Invalid Form Body",
                errors=discord_errors(problems),
                fail=f"invalid query string for {request.method} {op.template} (openapi.json): {text}",
            )


def describe(error: Any) -> str:
    """A short message; jsonschema's own repeats the whole (maybe huge) instance."""
    keyword, value, instance = error.validator, error.validator_value, error.instance
    if keyword == "maxLength":
        return f"Must be {value} or fewer in length (got {len(instance)})"
    if keyword == "minLength":
        return f"Must be {value} or more in length (got {len(instance)})"
    if keyword == "maxItems":
        return f"Must be {value} or fewer in length (got {len(instance)} items)"
    message: str = error.message
    return message if len(message) <= 300 else message[:300] + "..."


async def parse_body(request: web.Request) -> tuple[Any, list[UploadedFile]]:
    """JSON body, or multipart ``payload_json`` + ``files[N]`` parts."""
    if not request.can_read_body:
        return None, []
    if request.content_type.startswith("multipart/"):
        body: Any = None
        uploads: list[UploadedFile] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue  # nested multipart: Discord doesn't use it
            name = part.name or ""
            if name == "payload_json":
                body = _loads(await part.text())
            else:
                data = bytes(await part.read(decode=False))
                ctype = part.headers.get("Content-Type")
                uploads.append(UploadedFile(name, part.filename or name, ctype, data))
        return body, uploads
    raw = await request.read()
    if not raw:
        return None, []
    return _loads(raw.decode()), []


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise DiscordHTTPError(
            400, 50109, "The request body contains invalid JSON.", fail=f"invalid JSON body: {e}"
        ) from e
