"""The tower's HTTP pages: /healthz, /status (JSON) and /metrics (Prometheus)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mockfleet.tower.upgrade import last_failure

if TYPE_CHECKING:
    from mockfleet.tower.supervisor import Tower


class TowerCollector(Collector):
    def __init__(self, tower: Tower) -> None:
        self.tower = tower

    def collect(self) -> Iterator[Metric]:
        st = self.tower.status()
        mocks = GaugeMetricFamily("mockfleet_tower_mocks", "Mocks by state.", labels=["state"])
        for state, n in st["mocks"].items():
            mocks.add_metric([state], n)
        yield mocks
        pending = GaugeMetricFamily("mockfleet_tower_pending_triggers", "Start triggers waiting.")
        pending.add_metric([], st["pending_triggers"])
        yield pending
        exits = CounterMetricFamily(
            "mockfleet_tower_mock_exits", "Mock exits by reason.", labels=["reason"]
        )
        for reason, n in st["exits"].items():
            exits.add_metric([reason], n)
        yield exits
        lot_mocks = GaugeMetricFamily(
            "mockfleet_lot_mocks", "Running mocks per lot.", labels=["lot"]
        )
        sent = CounterMetricFamily("mockfleet_lot_messages_sent", "Messages sent.", labels=["lot"])
        failed = CounterMetricFamily(
            "mockfleet_lot_messages_failed", "Sends failed.", labels=["lot"]
        )
        sent_bytes = CounterMetricFamily("mockfleet_lot_bytes_sent", "Bytes sent.", labels=["lot"])
        for lot, t in st["lots"].items():
            lot_mocks.add_metric([lot], t["mocks"])
            sent.add_metric([lot], t["sent"])
            failed.add_metric([lot], t["send_errors"])
            sent_bytes.add_metric([lot], t["bytes"])
        yield from (lot_mocks, sent, failed, sent_bytes)
        info = GaugeMetricFamily("mockfleet_tower_info", "Tower version.", labels=["version"])
        info.add_metric([st["version"]], 1)
        yield info


def status_document(
    status: Mapping[str, Any], upgrade_error: Mapping[str, str] | None
) -> dict[str, Any]:
    """The ``/status`` body: the tower's status plus its last failed upgrade.

    The tower's version and ``upgrade_error`` are repeated in every lot's
    entry (as ``tower_version`` and ``upgrade_error``): the operator reads one
    lot's entry per tower, and a tower's version applies to all its lots.
    """
    error = dict(upgrade_error) if upgrade_error else None
    lots = {
        name: {**entry, "tower_version": status.get("version"), "upgrade_error": error}
        for name, entry in (status.get("lots") or {}).items()
    }
    return {**status, "upgrade_error": error, "lots": lots}


class StatusPages:
    def __init__(self, tower: Tower) -> None:
        self.tower = tower
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(TowerCollector(tower))

    def handle(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        if path == "/healthz":
            ok = not self.tower.shutting_down
            return (200 if ok else 503), "text/plain", b"ok\n" if ok else b"stopping\n"
        if path == "/status":
            doc = status_document(self.tower.status(), last_failure(self.tower.root))
            return 200, "application/json", json.dumps(doc).encode() + b"\n"
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.registry)
        return 404, "text/plain", b"not found: try /healthz, /status or /metrics\n"
