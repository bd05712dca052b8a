"""The tower's ``/metrics`` page (Prometheus text), imported on first use."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
        oom = CounterMetricFamily(
            "mockfleet_lot_mocks_oom_killed",
            "Mocks the kernel's out-of-memory killer took.",
            labels=["lot"],
        )
        for lot, t in st["lots"].items():
            lot_mocks.add_metric([lot], t["mocks"])
            sent.add_metric([lot], t["sent"])
            failed.add_metric([lot], t["send_errors"])
            sent_bytes.add_metric([lot], t["bytes"])
            oom.add_metric([lot], t["oom_killed"])
        yield from (lot_mocks, sent, failed, sent_bytes, oom)
        info = GaugeMetricFamily("mockfleet_tower_info", "Tower version.", labels=["version"])
        info.add_metric([st["version"]], 1)
        yield info


def exposition(tower: Tower) -> Callable[[], bytes]:
    """A function that renders the tower's metrics now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TowerCollector(tower))
    return lambda: generate_latest(registry)
