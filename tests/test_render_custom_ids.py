"""Persistent button ids: they name the stored job, round-trip exactly, and nothing else parses."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.discord_ui.custom_ids import (
    INDEXED_ACTIONS,
    JOB_ACTIONS,
    MAX_CUSTOM_ID_CHARS,
    Action,
    ButtonId,
    decode_custom_id,
    encode_custom_id,
    template,
)

JOB = "0123456789abcdef0123456789abcdef"
job_ids = st.uuids().map(lambda value: value.hex)


def test_documented_shapes() -> None:
    assert encode_custom_id("u", JOB, 0) == f"imagine:u:{JOB}:0"
    assert encode_custom_id("v", JOB, 3) == f"imagine:v:{JOB}:3"
    assert encode_custom_id("reroll", JOB) == f"imagine:reroll:{JOB}"
    assert decode_custom_id(f"imagine:delete:{JOB}") == ButtonId("delete", JOB)
    assert decode_custom_id(f"imagine:cancel:{JOB}") == ButtonId("cancel", JOB)


@given(st.sampled_from(INDEXED_ACTIONS), job_ids, st.integers(0, 3))
def test_indexed_round_trip(action: Action, job_id: str, index: int) -> None:
    custom_id = encode_custom_id(action, job_id, index)
    assert len(custom_id) <= MAX_CUSTOM_ID_CHARS
    assert decode_custom_id(custom_id) == ButtonId(action, job_id, index)
    assert re.fullmatch(template(action), custom_id)


@given(st.sampled_from(JOB_ACTIONS), job_ids)
def test_job_round_trip(action: Action, job_id: str) -> None:
    button = ButtonId(action, job_id)
    assert decode_custom_id(button.encode()) == button
    assert re.fullmatch(template(action), button.encode())


@pytest.mark.parametrize("custom_id", [
    "", "imagine", f"imagine:u:{JOB}", f"imagine:u:{JOB}:4", f"imagine:u:{JOB}:-1", f"imagine:reroll:{JOB}:0",
    f"imagine:x:{JOB}", f"imagine:U:{JOB}:0", f"imagine:u:{JOB.upper()}:0", f"imagine:u:{JOB[:-1]}:0",
    f"other:u:{JOB}:0", f"imagine:u:{JOB}:0 ", f"imagine:u:{JOB}:0\n", f" imagine:delete:{JOB}",
    f"imagine:delete:{JOB}:", f"imagine:u:{JOB}:٣", "imagine:delete:" + "a" * 200,
])
def test_strict_parser_rejects_everything_else(custom_id: str) -> None:
    assert decode_custom_id(custom_id) is None


@given(st.text(max_size=120))
def test_random_text_never_crashes_and_only_valid_ids_parse(text: str) -> None:
    button = decode_custom_id(text)
    assert button is None or button.encode() == text


def test_encoder_refuses_what_could_not_be_parsed() -> None:
    with pytest.raises(ValueError, match="needs an image index"):
        encode_custom_id("u", JOB)
    with pytest.raises(ValueError, match="takes no image index"):
        encode_custom_id("delete", JOB, 1)
    with pytest.raises(ValueError, match="32 lowercase hex"):
        encode_custom_id("v", "../../etc", 0)
    with pytest.raises(ValueError, match="unknown button action"):
        encode_custom_id("zoom", JOB)  # type: ignore[arg-type]
    assert decode_custom_id(encode_custom_id("u", uuid.uuid4().hex, 2)) is not None
