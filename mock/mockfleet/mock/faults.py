"""Fault decisions: which message is dropped, duplicated, corrupted, delayed.

Pure logic over a device's own fault stream, so the same lot seed and device
index inject the same faults on any machine. The runtime applies the
decisions; nothing here does I/O.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mockfleet.mock.record import Record

if TYPE_CHECKING:
    from mockfleet.mock.lot import Fault


class Decision(Record):
    """What to do to one message (fresh per message: every field at its default)."""

    __slots__ = (
        "drop",
        "duplicate",
        "late_by",
        "malformed",
        "offline_buffer",
        "offline_for",
        "offline_limit",
        "out_of_order",
        "oversize",
    )

    def __init__(self) -> None:
        self.drop = False
        self.duplicate = False
        self.out_of_order = False
        self.malformed = False
        self.oversize = 0
        self.late_by = 0.0
        #: seconds the device should stay offline from now (offline fault)
        self.offline_for = 0.0
        self.offline_buffer = True
        self.offline_limit = 0


def decide(faults: Iterable[Fault], rng: random.Random) -> Decision:
    """Roll every per-message fault once, in list order (stable stream use)."""
    d = Decision()
    for f in faults:
        if f.type == "clockSkew":
            continue  # per device, see skew_for_device
        hit = rng.random() < f.rate
        if not hit:
            continue
        if f.type == "drop":
            d.drop = True
        elif f.type == "duplicate":
            d.duplicate = True
        elif f.type == "outOfOrder":
            d.out_of_order = True
        elif f.type == "malformed":
            d.malformed = True
        elif f.type == "oversize":
            d.oversize = max(d.oversize, f.size)
        elif f.type == "lateTimestamp":
            d.late_by = max(d.late_by, f.delay)
        elif f.type == "offline" and d.offline_for == 0:
            d.offline_for = f.offlineFor
            d.offline_buffer = f.buffer
            d.offline_limit = f.bufferLimit
    return d


def skew_for_device(faults: Iterable[Fault], rng: random.Random) -> float:
    """A device's constant clock skew in seconds (0 when it is not skewed)."""
    skew = 0.0
    for f in faults:
        if f.type != "clockSkew":
            continue
        if rng.random() < f.rate:
            sign = {"ahead": 1.0, "behind": -1.0}.get(f.skewSign)
            if sign is None:
                sign = 1.0 if rng.random() < 0.5 else -1.0
            skew += sign * f.skew
    return skew


def corrupt(body: bytes, rng: random.Random) -> bytes:
    """A malformed message: the JSON cut short with stray bytes appended, which no
    JSON parser accepts (so a receiver can count it)."""
    if len(body) < 2:
        return b"{\xff"
    cut = rng.randrange(1, len(body))
    broken = body[:cut] + b"\x00}}{"
    try:
        json.loads(broken)
    except ValueError:
        return broken
    return b"{\xff" + body  # pragma: no cover - cutting valid JSON never parses


def pad_to(obj: dict[str, object], size: int, current: int) -> None:
    """Grow a JSON object to about ``size`` bytes with a padding field."""
    missing = size - current - len(',"_padding":""')
    if missing > 0:
        obj["_padding"] = "x" * missing
