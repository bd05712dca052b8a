"""The device process: runs one device until its natural end or a stop.

(Work in progress: the full engine lands in the next commits. The signature
below is the contract the tower forks against.)
"""

from __future__ import annotations

from mockfleet.mock.counters import CounterSlot
from mockfleet.mock.preload import LoadedLot


def run_device(
    lot: LoadedLot,
    index: int,
    *,
    stop_file: str | None = None,
    counters: CounterSlot | None = None,
) -> int:
    """Run device ``index`` of ``lot``; return the process exit code (exitcodes)."""
    raise NotImplementedError
