"""Values as moderators type them in ``/mod limits set``, and as ``/mod`` shows them back.

A value is read like a YAML scalar in config.yaml: ``5``, ``null`` (no limit), ``Europe/Berlin``. A token
bucket (``user_rate``, ``guild_rate``) has a short form, shown by ``/mod limits show`` the same way::

    AMOUNT [requests|cost] / WINDOW [burst BURST]       WINDOW in s (default), m, h or d

``6/60s``, ``6/1m burst 3``, ``240 cost/10m burst 60``; the file's form (``{amount: 6, window_s: 60}``)
works too. Only the form is checked here: ranges are checked by the config's own rules, so that a bad
value gets the message the file would get.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from bot.core.config import Bucket
from generation.errors import ConfigError

BUCKET_KEYS = frozenset({"user_rate", "guild_rate"})
BUCKET_FORM = "AMOUNT/WINDOW such as 6/60s, 6/1m burst 3 or 240 cost/10m burst 60, or null for no limit"
_WINDOW_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_BUCKET = re.compile(
    r"(?P<amount>[^\s/]+)\s*(?P<unit>requests?|cost)?\s*/\s*(?P<window>[0-9.]+)\s*(?P<per>s|min|m|h|d)?"
    r"(?:\s+burst\s+(?P<burst>\S+))?", re.IGNORECASE)


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{text!r} is not a value; allowed: a number, null or a word, as in config.yaml") from exc


def parse_value(key: str, text: str) -> Any:
    """What ``text`` says for ``key``, ready to be validated as the file's value would be."""
    text = text.strip()
    if key not in BUCKET_KEYS or "/" not in text or text.startswith("{"):
        return _scalar(text)
    match = _BUCKET.fullmatch(text)
    if match is None:
        raise ConfigError(f"{text!r} is not a bucket; allowed: {BUCKET_FORM}")
    bucket: dict[str, Any] = {
        "unit": "cost" if (match["unit"] or "").lower() == "cost" else "requests",
        "amount": _scalar(match["amount"]),
        "window_s": float(match["window"]) * _WINDOW_UNITS[(match["per"] or "").lower()],
    }
    if match["burst"] is not None:
        bucket["burst"] = _scalar(match["burst"])
    return bucket


def show_value(value: Any) -> str:
    """A value as ``/mod`` shows it (a bucket in the short form ``parse_value`` reads back)."""
    if isinstance(value, Bucket):
        value = value.model_dump(mode="json")
    if value is None:
        return "null (no limit)"
    if isinstance(value, dict) and {"amount", "window_s"} <= set(value):
        unit = value.get("unit", "requests")
        burst = value.get("burst")
        burst = value["amount"] if burst is None else burst
        return f"{value['amount']:g} {unit}/{value['window_s']:g}s burst {burst:g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
