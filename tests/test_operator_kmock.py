"""The operator as a real kopf process against an emulated Kubernetes API (kmock).

No cluster, no towers: this checks the operator's side of the contract — the
children it creates (with owner references), the plan it writes, and the
status and Events it reports — through real HTTP and real kopf machinery.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
from support.k8s_emulator import KopfFriendlyEmulator
from support.k8s_operator import OperatorProcess, wait_for, write_kubeconfig

from mockfleet.operator.towerpods import PLAN_ANNOTATION

NS = "default"
LOTS = "mockfleet.dev/v1alpha1/mocklots"
LOTS_URL = f"/apis/mockfleet.dev/v1alpha1/namespaces/{NS}/mocklots"
DEADLINE = 60.0


def node(name: str, ready: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def lot(name: str, devices: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mockfleet.dev/v1alpha1",
        "kind": "MockLot",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"devices": devices, "tower": {"maxDevicesPerTower": 50}, **spec},
    }


class Cluster:
    """The emulator, an HTTP client to it, and the operator process."""

    def __init__(self, api: KopfFriendlyEmulator, url: str, op: OperatorProcess) -> None:
        self.api = api
        self.url = url.rstrip("/")
        self.op = op
        self.http = aiohttp.ClientSession()

    def obj(self, resource: str, name: str, namespace: str | None = NS) -> dict[str, Any] | None:
        try:
            found = self.api.objects[resource, namespace, name]
        except KeyError:
            return None
        return None if found.deleted else json.loads(json.dumps(dict(found.raw)))

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        found = self.obj(LOTS, name) or {}
        for cond in (found.get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                return dict(cond)
        return None

    async def send(self, method: str, path: str, body: Any, content_type: str) -> dict[str, Any]:
        async with self.http.request(
            method, self.url + path, data=json.dumps(body), headers={"Content-Type": content_type}
        ) as resp:
            data = await resp.json(content_type=None)
            assert resp.status < 300, data
            return dict(data)

    def events(self, reason: str) -> list[dict[str, Any]]:
        return [
            dict(o.raw)
            for (res, _, _), o in self.api.objects.items()
            if res == kmock.resource("v1/events")
            and not o.deleted
            and o.raw.get("reason") == reason
        ]

    async def wait(self, check: Any, what: str) -> Any:
        return await wait_for(check, DEADLINE, what, on_timeout=self.op.tail)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with KopfFriendlyEmulator() as api, kmock.Server(api) as server:
        api.resources[LOTS] = kmock.ResourceInfo(
            namespaced=True,
            kind="MockLot",
            singular="mocklot",
            shortnames={"ml"},
            verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
            subresources={"status", "scale"},
        )
        api.put("v1/namespaces", {"metadata": {"name": NS}})
        api.put("v1/nodes", node("node-a"))
        api.put("v1/nodes", node("node-b"))
        api.put("v1/nodes", node("node-down", ready=False))
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(server.url))
        op = OperatorProcess(kubeconfig, tmp_path / "operator.log", NS, status_interval=1.0)
        c = Cluster(api, str(server.url), op)
        try:
            yield c
        finally:
            await c.http.close()
            op.stop()


async def test_lot_gets_plan_towers_and_status(cluster: Cluster) -> None:
    created = await cluster.send("POST", LOTS_URL, lot("meters", 70), "application/json")
    uid = created["metadata"]["uid"]

    cm = await cluster.wait(lambda: cluster.obj("v1/configmaps", "meters-plan"), "the plan")
    ds = await cluster.wait(lambda: cluster.obj("apps/v1/daemonsets", "meters-tower"), "towers")
    for child in (cm, ds):
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner["uid"] == uid
        assert owner["kind"] == "MockLot"
        assert owner["controller"] is True
    plan = json.loads(cm["data"]["plan.json"])
    assert plan["lot"] == "meters"
    # Two ready nodes, 50 per tower: 35 each; the NotReady node gets nothing.
    assert plan["nodes"] == {"node-a": [[0, 35]], "node-b": [[35, 70]]}
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "example.invalid/mockfleet:test"
    )

    assigned = await cluster.wait(
        lambda: (cluster.condition("meters", "DevicesAssigned") or {}).get("status") == "True",
        "DevicesAssigned=True",
    )
    assert assigned
    status = cluster.obj(LOTS, "meters")["status"]  # type: ignore[index]
    assert status["observedGeneration"] == 1
    assert status["desired"] == 70
    assert status["assigned"] == 70
    assert "mockfleet.dev/lot=meters" in status["selector"]
    # No tower pods exist here, so the towers cannot be ready.
    await cluster.wait(
        lambda: (cluster.condition("meters", "TowersReady") or {}).get("status") == "False",
        "TowersReady=False",
    )
    assert cluster.condition("meters", "Ready")["status"] == "False"  # type: ignore[index]
    # kopf keeps its bookkeeping under our API group.
    annotations = cluster.obj(LOTS, "meters")["metadata"].get("annotations", {})  # type: ignore[index]
    assert any(k.startswith("mockfleet.dev/") for k in annotations)
    assert not any(k.startswith("kopf.zalando.org/") for k in annotations)

    # A tower pod gets the plan's version noted, so its kubelet refreshes the volume now.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "meters-tower-a", "labels": ds["spec"]["selector"]["matchLabels"]},
        "spec": {"nodeName": "node-a"},
        "status": {"phase": "Pending"},
    }
    await cluster.send("POST", f"/api/v1/namespaces/{NS}/pods", pod, "application/json")

    def noted() -> str | None:
        found = cluster.obj("v1/pods", "meters-tower-a") or {}
        return (found["metadata"].get("annotations") or {}).get(PLAN_ANNOTATION)

    version = cm["metadata"]["resourceVersion"]
    assert await cluster.wait(lambda: noted() == version, "the plan version on the pod")

    # Scale: 70 -> 120 with a 50-per-tower cap leaves 20 unassigned, and says so.
    await cluster.send(
        "PATCH", f"{LOTS_URL}/meters", {"spec": {"devices": 120}}, "application/merge-patch+json"
    )

    def new_plan() -> dict[str, Any] | None:
        got = cluster.obj("v1/configmaps", "meters-plan") or {"data": {"plan.json": "{}"}}
        data = json.loads(got["data"]["plan.json"])
        return data if data.get("devices") == 120 else None

    plan = await cluster.wait(new_plan, "the plan for 120 devices")
    # Running devices keep their node; the new ones fill each tower up to its cap of 50.
    assert plan["nodes"] == {"node-a": [[0, 35], [70, 85]], "node-b": [[35, 70], [85, 100]]}
    cond = await cluster.wait(
        lambda: (
            (c := cluster.condition("meters", "DevicesAssigned")) and c["status"] == "False" and c
        ),
        "DevicesAssigned=False after scaling beyond capacity",
    )
    assert cond["reason"] == "CapacityExceeded"
    assert "20 of 120" in cond["message"]
    assert cluster.obj(LOTS, "meters")["status"]["observedGeneration"] == 2  # type: ignore[index]
    new_version = cluster.obj("v1/configmaps", "meters-plan")["metadata"]["resourceVersion"]  # type: ignore[index]
    assert new_version != version
    assert await cluster.wait(lambda: noted() == new_version, "the new plan version on the pod")


async def test_invalid_lot_is_reported_not_retried(cluster: Cluster) -> None:
    bad = lot("broken", 5, sink={"type": "http", "url": "ftp://nowhere/{id}"})
    await cluster.send("POST", LOTS_URL, bad, "application/json")
    cond = await cluster.wait(
        lambda: (c := cluster.condition("broken", "Invalid")) and c["status"] == "True" and c,
        "Invalid=True",
    )
    assert "sink.url" in cond["message"]
    assert "must start with http:// or https://" in cond["message"]
    events = await cluster.wait(lambda: cluster.events("InvalidSpec"), "an InvalidSpec Event")
    assert "sink.url" in events[0]["message"]
    assert events[0]["type"] == "Warning"
    assert cluster.obj("v1/configmaps", "broken-plan") is None
    assert cluster.obj("apps/v1/daemonsets", "broken-tower") is None
    # The timer re-checks every second; the same problem is not re-announced.
    first = cluster.condition("broken", "Invalid")["lastTransitionTime"]  # type: ignore[index]

    def timer_passes() -> int:
        return sum(
            1
            for line in cluster.op.log.read_text(encoding="utf-8").splitlines()
            if "Timer 'lot_refresh' succeeded" in line and '"name": "broken"' in line
        )

    await cluster.wait(lambda: timer_passes() >= 3, "three status passes")
    assert len(cluster.events("InvalidSpec")) == 1
    assert cluster.condition("broken", "Invalid")["lastTransitionTime"] == first  # type: ignore[index]
