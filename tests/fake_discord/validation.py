"""Validate requests (bodies and query strings) and the fake's own answers against Discord's
OpenAPI 3.1 spec (``openapi.json``).

The spec types snowflakes as digit strings, while discord.py sends some as ints (e.g.
``attachments[].id`` is the file index) and some int-typed fields as strings (e.g.
``default_member_permissions``).  Discord accepts both, so the validator is extended:
an int is a valid snowflake string, and a digit string is a valid integer (bounds still
checked), and ``oneOf`` means "at least one" since the leniency can make a value match two
branches.  Nothing else is relaxed.  Query strings are strings: each value is first read as
the parameter's type (``1``/``true``/``0``/``false`` for booleans, digits for integers).

Without the spec file validation is off and ``spec_status_line()`` says why, except under
``CI=true``, where ``load_validator`` raises ``SpecMissing`` so no CI run passes unvalidated.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
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
_QUERY_KEY = "x-fake-query-parameters"
_RESPONSES_KEY = "x-fake-response-bodies"
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
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


class SpecMissing(RuntimeError):
    """The OpenAPI spec is absent where it must be (CI=true)."""


@dataclass(frozen=True)
class QueryParam:
    key: str  # key under _QUERY_KEY
    types: frozenset[str]  # JSON types the (resolved) schema allows, to read the string as
    item_types: frozenset[str] | None  # for array parameters (the key repeated)
    required: bool


@dataclass(frozen=True)
class Operation:
    template: str  # e.g. "/channels/{channel_id}/messages"
    method: str
    body_key: str | None  # key under _BODIES_KEY, None when the operation takes no body
    query: dict[str, QueryParam] = field(default_factory=dict)
    # Status code ("200", "2XX") -> key under _RESPONSES_KEY, or None when it has no body.
    responses: dict[str, str | None] = field(default_factory=dict)

    def response_key(self, status: int) -> tuple[bool, str | None]:
        """(listed, key) for a status: whether the spec lists it, and its body schema's key."""
        for code in (str(status), f"{str(status)[0]}XX"):
            if code in self.responses:
                return True, self.responses[code]
        return False, None


def _path_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("^" + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


class SpecValidator:
    """Finds the OpenAPI operation for a request and validates its body."""

    def __init__(self, spec: JSON) -> None:
        self._spec = spec
        self._schemas: dict[str, dict[str, JSON]] = {_BODIES_KEY: {}, _QUERY_KEY: {}, _RESPONSES_KEY: {}}
        self._routes: list[tuple[re.Pattern[str], str, dict[str, Operation]]] = []
        for template, item in spec["paths"].items():
            ops: dict[str, Operation] = {}
            for method, op in item.items():
                if method == "parameters" or not isinstance(op, dict):
                    continue
                name = f"{method.upper()} {template}"
                content = (op.get("requestBody") or {}).get("content") or {}
                schema = (content.get("application/json") or content.get("multipart/form-data") or {}).get("schema")
                body_key = self._keep(_BODIES_KEY, name, schema)
                params = [*item.get("parameters", []), *op.get("parameters", [])]
                query = {p["name"]: self._query_param(name, p) for p in params if p.get("in") == "query"}
                responses = {
                    code: self._keep(_RESPONSES_KEY, f"{name} {code}", _json_schema(self._resolve(r)))
                    for code, r in (op.get("responses") or {}).items()
                }
                ops[method.upper()] = Operation(template, method.upper(), body_key, query, responses)
            self._routes.append((_path_regex(template), template, ops))
        # Literal segments (@me, @original) must win over {param} segments.
        self._routes.sort(key=lambda r: r[1].count("{"))
        contents = {**spec, **self._schemas}  # in-memory only; the file is never modified
        resource = Resource.from_contents(contents, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
        self._validators: dict[tuple[str, str], Validator] = {}

    def operation(self, method: str, path: str) -> Operation | None:
        for regex, _template, ops in self._routes:
            if regex.match(path) and method in ops:
                return ops[method]
        return None

    def _keep(self, section: str, key: str, schema: JSON | None) -> str | None:
        if schema is None:
            return None
        self._schemas[section][key] = schema
        return key

    def _resolve(self, node: JSON) -> JSON:
        """Follow local ``$ref``s (``#/components/...``) to the node they name."""
        while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
            target: Any = self._spec
            for part in node["$ref"][2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def _types(self, schema: JSON) -> frozenset[str]:
        declared = self._resolve(schema).get("type", [])
        return frozenset([declared] if isinstance(declared, str) else declared)

    def _query_param(self, op_name: str, param: JSON) -> QueryParam:
        schema = param.get("schema") or {}
        key = self._keep(_QUERY_KEY, f"{op_name} ?{param['name']}", schema)
        assert key is not None
        types = self._types(schema)
        items = self._resolve(schema).get("items") if "array" in types else None
        item_types = self._types(items) if isinstance(items, dict) else None
        return QueryParam(key, types, item_types, bool(param.get("required")))

    def _validator(self, key: str, section: str = _BODIES_KEY) -> Validator:
        if (section, key) not in self._validators:
            ref = {"$ref": f"{SPEC_URI}#/{section}/{key.replace('~', '~0').replace('/', '~1')}"}
            self._validators[section, key] = LenientValidator(ref, registry=self._registry)
        return self._validators[section, key]

    def validate_component(self, name: str, instance: Any) -> list[ValidationError]:
        """Validate against ``#/components/schemas/<name>`` (e.g. to check the fake's own answers)."""
        if ("components", name) not in self._validators:
            ref = {"$ref": f"{SPEC_URI}#/components/schemas/{name}"}
            self._validators["components", name] = LenientValidator(ref, registry=self._registry)
        return [_most_specific(e) for e in self._validators["components", name].iter_errors(instance)]

    def validate(self, op: Operation, body: Any) -> list[ValidationError]:
        if op.body_key is None:
            return []
        return [_most_specific(e) for e in self._validator(op.body_key).iter_errors(body)]

    def validate_query(self, op: Operation, query: Mapping[str, list[str]]) -> tuple[Problems, list[str]]:
        """(problems with known parameters, names of unknown ones) for a request's query string."""
        problems: Problems = []
        for name, param in op.query.items():
            if name not in query:
                if param.required:
                    problems.append(([name], "This field is required"))
                continue
            raw = query[name]
            if param.item_types is not None:
                value: Any = [_coerce(v, param.item_types) for v in raw]
            elif len(raw) > 1:
                problems.append(([name], f"given {len(raw)} times: {raw!r}"))
                continue
            else:
                value = _coerce(raw[0], param.types)
            for error in self._validator(param.key, _QUERY_KEY).iter_errors(value):
                error = _most_specific(error)
                problems.append(([name, *error_path(error)], error.message))
        return problems, sorted(set(query) - set(op.query))

    def validate_response(self, op: Operation, status: int, body: Any, has_body: bool) -> list[str]:
        """Problems with the fake's own 2xx answer to ``op``, as messages."""
        listed, key = op.response_key(status)
        if not listed:
            return [f"status {status} is not one the spec lists ({sorted(op.responses)})"]
        if key is None:
            return ["the spec says this status has no body, but the fake sent one"] if has_body else []
        if not has_body:
            return ["the spec says this status has a JSON body, but the fake sent none"]
        errors = [_most_specific(e) for e in self._validator(key, _RESPONSES_KEY).iter_errors(body)]
        return [f"{'.'.join(error_path(e)) or '<body>'}: {e.message[:300]}" for e in errors]


Problems = list[tuple[list[str], str]]


def _json_schema(response: JSON) -> JSON | None:
    return ((response.get("content") or {}).get("application/json") or {}).get("schema")


def _coerce(value: str, types: frozenset[str]) -> Any:
    """A query string value read as the type the parameter's schema says (else left a string)."""
    if "boolean" in types and value.lower() in _BOOLS:
        return _BOOLS[value.lower()]
    if types & {"integer", "number"} and _INT_RE.match(value):
        return int(value)
    if "number" in types:
        try:
            return float(value)
        except ValueError:
            return value
    return value


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


def spec_required() -> bool:
    """Under CI (``CI=true``, as CI services set it) a missing spec is an error, not a skip."""
    return os.environ.get("CI") == "true"


def spec_status_line(path: str | os.PathLike[str] | None = None) -> str | None:
    """One line saying validation is off because the spec is missing (for a pytest header); None if found."""
    where = spec_path_from_env(path)
    if where.is_file():
        return None
    return (
        f"fake Discord: OpenAPI spec not found at {where}; request validation is OFF "
        "(point DISCORD_OPENAPI_SPEC at openapi.json)"
    )


def load_validator(path: Path) -> tuple[SpecValidator | None, str | None]:
    """The validator, or None and the reason validation is off; raises ``SpecMissing`` under CI=true."""
    if not path.is_file():
        if spec_required():
            raise SpecMissing(
                f"fake Discord: OpenAPI spec not found at {path}, and CI=true requires it: set "
                "DISCORD_OPENAPI_SPEC to Discord's openapi.json (or pass FakeDiscord(validate=False) on purpose)"
            )
        return None, spec_status_line(path)
    return _load(str(path.resolve())), None
