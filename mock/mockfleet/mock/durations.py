"""Human durations ("500ms", "5s", "1m30s", "2h") and byte sizes ("256KiB").

Lot files are written by people, so every duration field accepts a compact
string or a plain number of seconds, and every error says what was expected.
Plain functions with no heavy imports: command lines (the tower's included)
parse durations without loading pydantic; the schema types are in
``mockfleet.mock.fieldtypes``.
"""

from __future__ import annotations

import re

_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}


def parse_duration(value: object) -> float:
    """Return seconds for a duration given as a number or a string like '1m30s'."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '500ms', '5s' or '1m', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '500ms', '5s' or '1m', got {value!r}")
    text = value.strip().replace(" ", "")
    if not text:
        raise ValueError("empty duration: write e.g. '500ms', '5s' or '1m'")
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return seconds
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(
            f"invalid duration {value!r}: use a number with a unit ms, s, m, h or d, "
            "e.g. '500ms', '5s', '1m30s'"
        )
    return total


def format_duration(seconds: float) -> str:
    """Compact, round-trippable rendering used in logs and reports."""
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    if seconds < 120:
        return f"{seconds:g}s"
    if seconds < 7200:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"


def parse_size(value: object) -> int:
    """Return bytes for a size given as an integer or a string like '256KiB'."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as '1024', '64KiB' or '1MiB', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value!r}")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    raise ValueError(f"invalid size {value!r}: use bytes or a unit B, KB, KiB, MB, MiB, GB, GiB")
