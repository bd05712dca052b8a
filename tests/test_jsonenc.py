"""mockfleet.mock.jsonenc: a reusable encoder with the stdlib's exact output."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import pytest

from mockfleet.mock.jsonenc import encoder

SAMPLES: list[Any] = [
    {"device_id": "d-1", "seq": 3, "t": 1800000000.123456, "ok": True, "none": None},
    {"nested": {"list": [1, 2.5, "x", [], {}], "é": "ünïcode ✓", "q": 'a "quoted" \\ line\n'}},
    [1, -0.0, 1e300, 12345678901234567890, "tail"],
    "just a string",
    3.14,
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key"},
]

OPTIONS: list[dict[str, Any]] = [
    {"separators": (",", ":"), "ensure_ascii": False, "allow_nan": False},
    {"default": str},
    {},
]


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("obj", SAMPLES)
def test_the_same_text_as_the_stdlib(options: dict[str, Any], obj: Any) -> None:
    dumps = encoder(**options)
    assert dumps(obj) == json.JSONEncoder(**options).encode(obj)
    assert dumps(obj) == dumps(obj)  # reusable


def test_errors_are_the_stdlibs_and_the_encoder_survives_them() -> None:
    dumps = encoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    with pytest.raises(ValueError, match="Out of range float"):
        dumps({"a": [math.nan]})
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"when": dt.datetime(2026, 1, 1)})
    loop: list[Any] = []
    loop.append({"again": loop})
    with pytest.raises(ValueError, match="Circular reference"):
        dumps({"x": loop})
    shared = {"k": 1}
    # a failure mid-way must not leave a false "circular" mark behind
    assert dumps({"a": shared, "b": [shared]}) == '{"a":{"k":1},"b":[{"k":1}]}'
    assert encoder(default=str)({"when": dt.date(2026, 1, 2)}) == '{"when": "2026-01-02"}'
