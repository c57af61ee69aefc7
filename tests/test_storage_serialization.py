"""GenerationRequest <-> JSON dict: every field survives, corrupt rows fail loudly."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.core.errors import StorageError
from bot.storage import request_from_dict, request_to_dict
from generation.request import GenerationRequest

requests = st.builds(
    GenerationRequest,
    prompt=st.text(max_size=50), negative_prompt=st.text(max_size=20),
    width=st.none() | st.integers(64, 2048), height=st.none() | st.integers(64, 2048),
    steps=st.none() | st.integers(1, 200), guidance=st.none() | st.floats(0, 30),
    seed=st.none() | st.integers(0, 2**32 - 1), count=st.integers(1, 4),
    scheduler=st.none() | st.sampled_from(["euler", "ddim"]), model=st.none() | st.text(max_size=10),
    init_image=st.none() | st.binary(max_size=32), strength=st.none() | st.floats(0.05, 1),
    loras=st.lists(st.tuples(st.text(max_size=10), st.floats(-2, 2)), max_size=3).map(tuple),
)


@given(requests)
def test_round_trip_through_json(request: GenerationRequest) -> None:
    stored = json.loads(json.dumps(request_to_dict(request)))
    assert request_from_dict(stored, request.init_image) == request


def test_every_field_but_the_image_is_stored() -> None:
    names = {f.name for f in fields(GenerationRequest)} - {"init_image"}
    assert set(request_to_dict(GenerationRequest("x"))) == names


def test_integer_guidance_reads_as_float_and_unknown_keys_are_ignored() -> None:
    request = request_from_dict({"prompt": "x", "guidance": 7, "from_the_future": True})
    assert request.guidance == 7.0 and isinstance(request.guidance, float)


def test_a_row_from_before_loras_loads_without_them_and_loras_round_trip() -> None:
    old_row = {"prompt": "a fox", "negative_prompt": "", "width": 64, "height": 64, "steps": 2, "guidance": 7.0,
               "seed": 5, "count": 1, "scheduler": "default", "model": "tiny", "strength": None}
    assert request_from_dict(old_row) == GenerationRequest("a fox", width=64, height=64, steps=2, guidance=7.0,
                                                           seed=5, scheduler="default", model="tiny")
    with_loras = GenerationRequest("a fox", loras=(("ink", 0.8), ("fur", 1.0)))
    stored = json.loads(json.dumps(request_to_dict(with_loras)))
    assert stored["loras"] == [["ink", 0.8], ["fur", 1.0]]
    assert request_from_dict({**stored, "loras": [["ink", 0.8], ["fur", 1]]}) == with_loras  # JSON's 1 for 1.0


@pytest.mark.parametrize("data, message", [
    ({"prompt": "x", "loras": [["ink"]]}, "loras is not a list of \\[name, number\\] pairs"),
    ({"prompt": "x", "loras": [["ink", "0.8"]]}, "loras is not a list of"),
    ({"prompt": "x", "loras": [["ink", True]]}, "loras is not a list of"),
    ({"prompt": "x", "loras": {"ink": 0.8}}, "loras is not a list of"),
    ({"prompt": "x", "seed": "42"}, "seed has a str"),
    ({"prompt": "x", "count": True}, "count has a bool"),
    ({"prompt": "x", "steps": 2.5}, "steps has a float"),
    ({"seed": 1}, "lacks prompt"),
])
def test_corrupt_rows_fail_loudly(data: dict[str, object], message: str) -> None:
    with pytest.raises(StorageError, match=message):
        request_from_dict(data)
