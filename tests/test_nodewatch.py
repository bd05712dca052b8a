"""The node watch's parts: which node events matter, the lot registry, the stale-plan
check, and the debouncer that turns a burst of changes into one pass."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import pytest
from support.k8s_operator import wait_for

from mockfleet.mock.lot import MockLot, parse_lot
from mockfleet.operator.builders import build_plan_configmap
from mockfleet.operator.debounce import Debouncer
from mockfleet.operator.nodes import eligible_nodes, node_facts
from mockfleet.operator.nodewatch import LotRegistry, NodeTracker, plan_is_stale

LOG = logging.getLogger("test.nodewatch")


def node(name: str, ready: bool = True, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"pool": "load"}, "resourceVersion": "1"},
        "spec": dict(spec),
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastHeartbeatTime": "2025-01-01T00:00:00Z",
                }
            ],
            "images": [],
            "allocatable": {"cpu": "4"},
        },
    }


def make_lot(**tower: Any) -> MockLot:
    return parse_lot(
        {
            "apiVersion": "mockfleet.dev/v1alpha1",
            "kind": "MockLot",
            "metadata": {"name": "meters", "namespace": "iot"},
            "spec": {"devices": 10, "tower": tower},
        }
    )


def test_status_churn_is_not_a_change_but_eligibility_is() -> None:
    tracker = NodeTracker()
    base = node("w1")
    assert tracker.observe(None, base)  # first sighting (after a re-list it may be news)
    churn = copy.deepcopy(base)
    churn["metadata"]["resourceVersion"] = "2"
    churn["metadata"]["annotations"] = {"node.alpha.kubernetes.io/ttl": "0"}
    churn["status"]["conditions"][0]["lastHeartbeatTime"] = "2025-01-01T00:00:40Z"
    churn["status"]["images"] = [{"names": ["busybox"]}]
    churn["status"]["allocatable"] = {"cpu": "3"}
    assert not tracker.observe("MODIFIED", churn)
    assert not tracker.observe(None, churn)  # a re-list of an unchanged node

    def changed(mutate: Any) -> bool:
        fresh = NodeTracker()
        fresh.observe(None, base)
        other = copy.deepcopy(base)
        mutate(other)
        return fresh.observe("MODIFIED", other)

    assert changed(lambda n: n["status"]["conditions"][0].update(status="False"))
    assert changed(lambda n: n["status"].update(conditions=[]))
    assert changed(lambda n: n["spec"].update(unschedulable=True))
    assert changed(lambda n: n["metadata"]["labels"].update(pool="other"))
    assert changed(lambda n: n["metadata"]["labels"].update(extra="1"))
    assert changed(lambda n: n["spec"].update(taints=[{"key": "k", "effect": "NoSchedule"}]))
    assert changed(lambda n: n["metadata"].update(deletionTimestamp="2025-01-01T00:01:00Z"))
    assert tracker.observe("DELETED", churn)
    assert tracker.observe("ADDED", churn)  # back again: news


def test_facts_ignore_the_order_of_labels_and_taints() -> None:
    a = node("w1", taints=[{"key": "a", "effect": "NoSchedule"}, {"key": "b", "value": "1"}])
    b = copy.deepcopy(a)
    b["spec"]["taints"].reverse()
    b["metadata"]["labels"] = dict(reversed(list({**b["metadata"]["labels"], "z": "1"}.items())))
    a["metadata"]["labels"]["z"] = "1"
    assert node_facts(a) == node_facts(b)


def test_a_node_being_deleted_is_not_eligible() -> None:
    going = node("w2")
    going["metadata"]["deletionTimestamp"] = "2025-01-01T00:01:00Z"
    assert eligible_nodes([node("w1"), going], make_lot()) == ["w1"]


def test_lot_registry_follows_kopf_events() -> None:
    lots = LotRegistry()
    lots.observe(None, {"metadata": {"namespace": "b", "name": "y"}})
    lots.observe("ADDED", {"metadata": {"namespace": "a", "name": "x"}})
    lots.observe("MODIFIED", {"metadata": {"namespace": "a", "name": "x"}})
    assert lots.served() == [("a", "x"), ("b", "y")]
    lots.observe("DELETED", {"metadata": {"namespace": "b", "name": "y"}})
    assert lots.served() == [("a", "x")]


def test_a_plan_is_stale_when_the_eligible_nodes_differ() -> None:
    lot = make_lot(nodeSelector={"pool": "load"})
    plan = build_plan_configmap(lot, {"w1": [(0, 10)], "w2": []})
    assert not plan_is_stale(lot, [node("w1"), node("w2")], plan)
    assert plan_is_stale(lot, [node("w1"), node("w2", ready=False)], plan)
    assert plan_is_stale(lot, [node("w1"), node("w2"), node("w3")], plan)
    other_pool = node("w3")
    other_pool["metadata"]["labels"] = {"pool": "other"}
    assert not plan_is_stale(lot, [node("w1"), node("w2"), other_pool], plan)


class Counter:
    def __init__(self, fail: int = 0, gate: asyncio.Event | None = None) -> None:
        self.calls = 0
        self.fail = fail
        self.gate = gate

    async def __call__(self) -> None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.calls <= self.fail:
            raise RuntimeError("API down")


async def debounced(action: Counter, **kw: float) -> Debouncer:
    d = Debouncer(
        action,
        quiet=kw.get("quiet", 0.05),
        max_delay=kw.get("max_delay", 5.0),
        retry=kw.get("retry", 0.05),
        logger=LOG,
    )
    d.start()
    return d


async def test_a_burst_is_one_run() -> None:
    action = Counter()
    d = await debounced(action, quiet=1.0)
    try:
        for _ in range(10):
            d.poke()
            await asyncio.sleep(0.01)  # pokes far closer together than the quiet time
        await wait_for(lambda: d.runs == 1 and d.idle, 10, "one run")
        assert action.calls == 1
    finally:
        await d.stop()


async def test_an_endless_burst_still_runs_by_max_delay() -> None:
    action = Counter()
    d = await debounced(action, quiet=10.0, max_delay=0.2)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while action.calls == 0:
            assert loop.time() - start < 10, "no run although max_delay passed"
            d.poke()  # never quiet for 10 s
            await asyncio.sleep(0.01)
        assert loop.time() - start >= 0.2
    finally:
        await d.stop()


async def test_a_poke_during_a_run_means_one_more_run() -> None:
    gate = asyncio.Event()
    action = Counter(gate=gate)
    d = await debounced(action)
    try:
        d.poke()
        await wait_for(lambda: action.calls == 1, 10, "the first run to start")
        d.poke()
        d.poke()
        gate.set()
        await wait_for(lambda: d.runs == 2 and d.idle, 10, "exactly one more run")
        assert action.calls == 2
    finally:
        await d.stop()


async def test_a_failed_run_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    action = Counter(fail=2)
    d = await debounced(action)
    try:
        d.poke()
        await wait_for(lambda: action.calls == 3 and d.idle, 10, "two retries")
        assert "API down" in caplog.text
    finally:
        await d.stop()
