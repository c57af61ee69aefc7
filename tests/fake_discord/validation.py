"""Validate request bodies against Discord's OpenAPI 3.1 spec (``openapi.json``).

The spec types snowflakes as digit strings, while discord.py sends some as ints (e.g.
``attachments[].id`` is the file index) and some int-typed fields as strings (e.g.
``default_member_permissions``).  Discord accepts both, so the validator is extended:
an int is a valid snowflake string, and a digit string is a valid integer (bounds still
checked), and ``oneOf`` means "at least one" since the leniency can make a value match two
branches.  Nothing else is relaxed.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .models import JSON

SPEC_URI = "urn:discord:openapi"
_BODIES_KEY = "x-fake-request-bodies"
_INT_RE = re.compile(r"^-?[0-9]+$")
# tests/fake_discord/validation.py -> repo root is parents[2]; the spec lives beside the repo.
DEFAULT_SPEC_PATH = Path(__file__).resolve().parents[2] / ".." / "shared" / "discord" / "openapi.json"
# Discord's real limit for bot message content; the spec allows 4000 (Nitro users).
BOT_CONTENT_LIMIT = 2000


def spec_path_from_env(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("DISCORD_OPENAPI_SPEC")
    return Path(env) if env else DEFAULT_SPEC_PATH.resolve()


def _is_int_like(instance: object) -> bool:
    return isinstance(instance, str) and bool(_INT_RE.match(instance))


def _type(validator: Validator, types: Any, instance: Any, schema: JSON) -> Iterator[ValidationError]:
    types = [types] if isinstance(types, str) else list(types)
    if any(validator.is_type(instance, t) for t in types):
        return
    if "integer" in types and _is_int_like(instance):
        return  # int-like string where the spec says integer
    is_int = isinstance(instance, int) and not isinstance(instance, bool)
    if is_int and "string" in types and schema.get("format") == "snowflake" and instance >= 0:
        return  # integer snowflake where the spec says string
    yield ValidationError(f"{instance!r} is not of type {', '.join(map(repr, types))}")


def _numeric(keyword: str) -> Any:
    original = Draft202012Validator.VALIDATORS[keyword]

    def check(validator: Validator, bound: Any, instance: Any, schema: JSON) -> Iterator[ValidationError]:
        # Bounds apply to int-like strings too, so "99999999999999999999" is still rejected.
        value = int(instance) if _is_int_like(instance) else instance
        yield from original(validator, bound, value, schema)

    return check


LenientValidator = validators.extend(
    Draft202012Validator,
    {
        "type": _type,
        **{k: _numeric(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")},
        # The spec's oneOfs only discriminate; with the leniency above a digit string can match
        # both the string and the int64 branch (message nonce), so "at least one" is the rule.
        "oneOf": Draft202012Validator.VALIDATORS["anyOf"],
    },
)


@dataclass(frozen=True)
class Operation:
    template: str  # e.g. "/channels/{channel_id}/messages"
    method: str
    body_key: str | None  # key under _BODIES_KEY, None when the operation takes no body


def _path_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("^" + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


class SpecValidator:
    """Finds the OpenAPI operation for a request and validates its body."""

    def __init__(self, spec: JSON) -> None:
        bodies: dict[str, JSON] = {}
        self._routes: list[tuple[re.Pattern[str], str, dict[str, Operation]]] = []
        for template, item in spec["paths"].items():
            ops: dict[str, Operation] = {}
            for method, op in item.items():
                if method == "parameters" or not isinstance(op, dict):
                    continue
                key = None
                content = (op.get("requestBody") or {}).get("content") or {}
                schema = (content.get("application/json") or content.get("multipart/form-data") or {}).get("schema")
                if schema is not None:
                    key = f"{method.upper()} {template}"
                    bodies[key] = schema
                ops[method.upper()] = Operation(template, method.upper(), key)
            self._routes.append((_path_regex(template), template, ops))
        # Literal segments (@me, @original) must win over {param} segments.
        self._routes.sort(key=lambda r: r[1].count("{"))
        contents = {**spec, _BODIES_KEY: bodies}  # in-memory only; the file is never modified
        resource = Resource.from_contents(contents, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
        self._validators: dict[str, Validator] = {}

    def operation(self, method: str, path: str) -> Operation | None:
        for regex, _template, ops in self._routes:
            if regex.match(path) and method in ops:
                return ops[method]
        return None

    def _validator(self, key: str) -> Validator:
        if key not in self._validators:
            ref = {"$ref": f"{SPEC_URI}#/{_BODIES_KEY}/{key.replace('~', '~0').replace('/', '~1')}"}
            self._validators[key] = LenientValidator(ref, registry=self._registry)
        return self._validators[key]

    def validate_component(self, name: str, instance: Any) -> list[ValidationError]:
        """Validate against ``#/components/schemas/<name>`` (e.g. to check the fake's own answers)."""
        key = f"components:{name}"
        if key not in self._validators:
            ref = {"$ref": f"{SPEC_URI}#/components/schemas/{name}"}
            self._validators[key] = LenientValidator(ref, registry=self._registry)
        return [_most_specific(e) for e in self._validators[key].iter_errors(instance)]

    def validate(self, op: Operation, body: Any) -> list[ValidationError]:
        if op.body_key is None:
            return []
        return [_most_specific(e) for e in self._validator(op.body_key).iter_errors(body)]


def _most_specific(error: ValidationError) -> ValidationError:
    """For a failed anyOf/oneOf, pick the branch the body was meant for.

    Discord's unions are discriminated by ``type``: branches whose ``type`` did not match are
    dropped, then the branch with the fewest errors wins.  Without this, a 2001-character
    content in a callback would be reported as "not valid under any of the given schemas".
    """
    if not error.context:
        return error
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.schema_path[0] if sub.schema_path else None, []).append(sub)
    candidates = [
        errs
        for errs in branches.values()
        if not any(list(e.relative_path) == ["type"] or (not e.relative_path and e.validator == "type") for e in errs)
    ]
    if not candidates:
        return error
    best = min(candidates, key=len)
    return _most_specific(best[0])


def extra_checks(template: str, body: Any) -> list[tuple[list[str], str]]:
    """Rules Discord enforces that the spec does not say, as (path, message) pairs.

    These run even when the spec file is absent.
    """
    problems = []
    if template.startswith("/channels/{channel_id}/messages") and isinstance(body, dict):
        content = body.get("content")
        if isinstance(content, str) and len(content) > BOT_CONTENT_LIMIT:
            problems.append((["content"], f"Must be {BOT_CONTENT_LIMIT} or fewer in length (got {len(content)})"))
    return problems


def error_path(error: ValidationError) -> list[str]:
    return [str(p) for p in error.absolute_path]


def discord_errors(errors: list[tuple[list[str], str]]) -> JSON:
    """Discord's nested ``errors`` object: {"content": {"_errors": [{"code", "message"}]}}."""
    out: JSON = {}
    for path, message in errors:
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node.setdefault("_errors", []).append({"code": "FAKE_SCHEMA_INVALID", "message": message})
    return out


@lru_cache(maxsize=4)
def _load(path: str) -> SpecValidator:
    with open(path, encoding="utf-8") as fh:
        return SpecValidator(json.load(fh))


def load_validator(path: Path) -> tuple[SpecValidator | None, str | None]:
    """The validator, or None and the reason validation is skipped (also warned)."""
    if not path.is_file():
        reason = f"OpenAPI spec not found at {path}; request bodies are NOT validated (set DISCORD_OPENAPI_SPEC)"
        warnings.warn(reason, stacklevel=3)
        return None, reason
    return _load(str(path.resolve())), None
