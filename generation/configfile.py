"""Load YAML into pydantic models with errors that name the key, its line and what is allowed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError, ValidatorFunctionWrapHandler, WrapValidator

from generation.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)
KeyPath = tuple[str | int, ...]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def within(low: float, high: float, unit: str = "", note: str = "") -> WrapValidator:
    """A number field's sane range, with one message naming it: "allowed: 1 to 2592000 s (30 days)".

    Use as ``Annotated[float, within(1, 2_592_000, "s", "30 days")]``. YAML's ``.inf`` and ``.nan`` (and
    "inf" in quotes) are refused with the same message: no limit, interval or weight may be infinite, and
    one that is out of range would fail later, inside a request, as a ZeroDivisionError or OverflowError."""
    allowed = f"allowed: {_number(low)} to {_number(high)}{f' {unit}' if unit else ''}{f' ({note})' if note else ''}"

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, (float, str)) and not isinstance(value, bool):
            try:
                number = float(value)
            except ValueError:
                number = 0.0  # not a number at all: pydantic's own message says so
            if not math.isfinite(number):
                raise ValueError(f"{value} is not a finite number; {allowed}")
        result = handler(value)
        if not low <= result <= high:
            raise ValueError(f"{_number(result)} is out of range; {allowed}")
        return result

    return WrapValidator(check)


def _line_map(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _line_map(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, (*path, index), lines)


def parse_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[KeyPath, int]]:
    """Parse YAML text into a mapping plus the line of every key (1-based)."""
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _line_map(node, (), lines)
    return data, lines


def _line_for(loc: KeyPath, lines: dict[KeyPath, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        # pydantic reports dict[int, ...] keys as ints; YAML mapping keys are recorded as strings.
        for candidate in (tuple(loc[:end]), tuple(str(part) for part in loc[:end])):
            line = lines.get(candidate)
            if line is not None:
                return line
    return None


def describe_validation_error(
    exc: ValidationError, source: str, lines: dict[KeyPath, int], prefix: KeyPath = ()
) -> str:
    """Turn pydantic's errors into one message per bad key: 'key (line N): what is wrong'."""
    parts = []
    for error in exc.errors():
        loc: KeyPath = (*prefix, *(part for part in error["loc"] if isinstance(part, (str, int))))
        key = ".".join(str(part) for part in loc) or "(top level)"
        line = _line_for(loc, lines)
        where = f" (line {line})" if line is not None else ""
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key; check the spelling against the documented keys"
        elif error["type"] == "value_error":
            # A whole-section check: its message already names the values; dumping the section adds noise.
            message = message.removeprefix("Value error, ")
        elif "input" in error and error["type"] != "missing":
            message = f"{message} (got {error['input']!r})"
        parts.append(f"{key}{where}: {message}")
    return f"{source}: invalid configuration: " + "; ".join(parts)


def validate_section(
    model: type[ModelT], data: Any, source: str, lines: dict[KeyPath, int], prefix: KeyPath = ()
) -> ModelT:
    """Validate ``data`` (the part of the file at ``prefix``) as ``model`` or raise ConfigError."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source, lines, prefix)) from exc


def read_config_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist; pass --config PATH or set IMAGINE_CONFIG") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}); allowed: UTF-8 YAML") from exc
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc
