"""The last good report of each tower pod, to ride out a moment of silence.

A tower that re-executes itself for an in-place upgrade, or is busy for a
moment, misses one ``/status`` request now and then. Reporting it silent at
once would flip the lot to not Ready (with Warning Events) and straight back:
exactly the flapping that makes status useless to dashboards and GitOps
tools. So a failed request is answered with the pod's last good report while
that is younger than a grace period; only a tower silent for longer counts as
not reporting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mockfleet.operator.status import TowerReport

#: Seconds a tower may be silent before the lot's status says so.
DEFAULT_GRACE = 30.0


class ReportCache:
    def __init__(self, grace: float = DEFAULT_GRACE) -> None:
        self.grace = grace
        self._last: dict[tuple[str, str], tuple[float, Any]] = {}

    def settle(self, lot: str, reports: Sequence[TowerReport], now: float) -> list[TowerReport]:
        """``reports`` with recent silences filled in; remembers the good ones.

        ``lot`` names the lot (namespace/name); ``now`` is a monotonic time.
        Entries of pods no longer reported on are forgotten.
        """
        out: list[TowerReport] = []
        kept: dict[tuple[str, str], tuple[float, Any]] = {
            key: value for key, value in self._last.items() if key[0] != lot
        }
        for report in reports:
            key = (lot, report.pod)
            if report.stats is not None:
                kept[key] = (now, report.stats)
                out.append(report)
                continue
            last = self._last.get(key)
            if last is not None and now - last[0] <= self.grace:
                kept[key] = last
                out.append(TowerReport(report.node, report.pod, last[1]))
            else:
                out.append(report)
        self._last = kept
        return out
