"""The runtime contract between the device engine and generators."""

from __future__ import annotations

from typing import Any, Protocol

from mockfleet.mock.record import Record


class Context(Record):
    """What a generator may read while one sample is rendered.

    One Context lives per device and is updated in place before each sample,
    so rendering allocates nothing for it.
    """

    __slots__ = (
        "device_id",
        "elapsed",
        "fields",
        "in_state",
        "index",
        "lot",
        "now",
        "seq",
        "state",
        "time_offset",
        "vars",
    )

    def __init__(
        self,
        device_id: str,
        index: int,
        lot: str,
        vars: dict[str, Any],
        now: float = 0.0,
        elapsed: float = 0.0,
        in_state: float = 0.0,
        seq: int = 0,
        state: str = "",
        time_offset: float = 0.0,
        fields: dict[str, Any] | None = None,
    ) -> None:
        self.device_id = device_id
        self.index = index
        self.lot = lot
        #: constants and per-device variables, by name
        self.vars = vars
        #: simulated epoch seconds of this sample (after clock faults)
        self.now = now
        #: seconds since the device started (simulated)
        self.elapsed = elapsed
        #: seconds since the device entered its current state (simulated)
        self.in_state = in_state
        self.seq = seq
        self.state = state
        #: added to timestamps only: late-timestamp and clock-skew faults
        self.time_offset = time_offset
        #: top-level fields rendered so far in this sample (read by expr)
        self.fields: dict[str, Any] = {} if fields is None else fields


class Generator(Protocol):
    """A per-device value source; may keep state between calls."""

    def __call__(self, ctx: Context) -> Any: ...
