"""GenerationRequest <-> JSON-safe dict, for the jobs table's ``request`` column.

Every field but ``init_image`` goes into the dict (the image bytes live in the ``init_image`` blob
column). Reading is strict about types so a corrupt row fails loudly instead of generating garbage;
keys this version does not know are ignored with a warning (written by a newer bot), and fields a row
lacks take their defaults (rows written before LoRAs have no ``loras``, before the safety checker no
``check_safety``).
"""

from __future__ import annotations

import functools
import logging
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, fields
from typing import Any

from bot.core.errors import StorageError
from generation.request import GenerationRequest

_log = logging.getLogger(__name__)

_SKIPPED = frozenset({"init_image"})
_PAIRS = frozenset({"loras"})  # tuples of (name, weight): JSON lists of [name, weight]


@functools.cache  # every read of a job needs it: resolving the annotations each time cost more than the rest
def _field_types() -> dict[str, tuple[type, ...]]:
    """Allowed JSON value types per field, from the dataclass's own annotations (so they stay in sync)."""
    hints = typing.get_type_hints(GenerationRequest)
    allowed: dict[str, tuple[type, ...]] = {}
    for name, hint in hints.items():
        if name in _SKIPPED or name in _PAIRS:
            continue
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) else (hint,)
        if typing.get_origin(hint) is typing.Literal:
            args = (str,)
        allowed[name] = tuple(type(None) if arg is type(None) else arg for arg in args)
    return allowed


def request_to_dict(request: GenerationRequest) -> dict[str, Any]:
    """The request's fields (without the init image) as JSON-safe values."""
    data = {f.name: getattr(request, f.name) for f in fields(GenerationRequest) if f.name not in _SKIPPED}
    for name in _PAIRS:
        data[name] = [[key, value] for key, value in data[name]]
    return data


def _pairs(name: str, value: Any) -> tuple[tuple[str, float], ...]:
    """A stored list of [name, weight] pairs, checked as strictly as the plain fields."""
    if not isinstance(value, list) or not all(
            isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
            and isinstance(pair[1], int | float) and not isinstance(pair[1], bool) for pair in value):
        raise StorageError(f"stored request field {name} is not a list of [name, number] pairs")
    return tuple((key, float(number)) for key, number in value)


def request_from_dict(data: Mapping[str, Any], init_image: bytes | None = None) -> GenerationRequest:
    """The request stored as ``data`` (plus its init image); ``StorageError`` when a value has the wrong type."""
    allowed = _field_types()
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name in _PAIRS:
            values[name] = _pairs(name, value)
            continue
        if name not in allowed:
            _log.warning("ignoring unknown stored request field %r", name)
            continue
        types_ok = allowed[name]
        if float in types_ok and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # JSON may store 7.0 as 7
        if (isinstance(value, bool) and bool not in types_ok) or not isinstance(value, types_ok):
            raise StorageError(f"stored request field {name} has a {type(value).__name__}; expected {types_ok}")
        values[name] = value
    missing = [f.name for f in fields(GenerationRequest)
               if f.name not in values and f.name not in _SKIPPED and f.default is MISSING]
    if missing:
        raise StorageError(f"stored request lacks {', '.join(missing)}")
    return GenerationRequest(**values, init_image=init_image)
