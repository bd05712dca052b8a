"""The runtime contract between the device engine and generators."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class Context:
    """What a generator may read while one sample is rendered.

    One Context lives per device and is updated in place before each sample,
    so rendering allocates nothing for it.
    """

    device_id: str
    index: int
    lot: str
    #: constants and per-device variables, by name
    vars: dict[str, Any]
    #: simulated epoch seconds of this sample (after clock faults)
    now: float = 0.0
    #: seconds since the device started (simulated)
    elapsed: float = 0.0
    #: seconds since the device entered its current state (simulated)
    in_state: float = 0.0
    seq: int = 0
    state: str = ""
    #: added to timestamps only: late-timestamp and clock-skew faults
    time_offset: float = 0.0
    #: top-level fields rendered so far in this sample (read by expr)
    fields: dict[str, Any] = field(default_factory=dict)


class Generator(Protocol):
    """A per-device value source; may keep state between calls."""

    def __call__(self, ctx: Context) -> Any: ...
