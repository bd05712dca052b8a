"""The operator as a real kopf process against an emulated Kubernetes API (kmock).

No cluster, no towers: this checks the operator's side of the contract — the
children it creates (with owner references), the plan it writes, and the
status and Events it reports — through real HTTP and real kopf machinery.
"""

from __future__ import annotations

import contextlib
import json
import time
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


@contextlib.asynccontextmanager
async def running_cluster(tmp_path: Path, status_interval: float) -> AsyncIterator[Cluster]:
    """The emulator with three nodes (one NotReady) and the operator watching it."""
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
        op = OperatorProcess(
            kubeconfig, tmp_path / "operator.log", NS, status_interval=status_interval
        )
        c = Cluster(api, str(server.url), op)
        try:
            yield c
        finally:
            await c.http.close()
            op.stop()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Status refreshed every second."""
    async with running_cluster(tmp_path, status_interval=1.0) as c:
        yield c


@pytest.fixture
async def quiet_cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Status refreshed every 300 s: after the first pass only watches explain a change."""
    async with running_cluster(tmp_path, status_interval=300.0) as c:
        yield c


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


# --------------------------------------------------------------------------- node watch

PROMPT = 20.0  # "within a few seconds"; generous for a shared machine, far below 300 s
MERGE = "application/merge-patch+json"


def plan_nodes(cluster: Cluster, name: str) -> dict[str, list[list[int]]] | None:
    found = cluster.obj("v1/configmaps", f"{name}-plan")
    return json.loads(found["data"]["plan.json"])["nodes"] if found else None


def timer_passes(cluster: Cluster, name: str) -> int:
    return sum(
        1
        for line in cluster.op.log.read_text(encoding="utf-8").splitlines()
        if "Timer 'lot_refresh' succeeded" in line and f'"name": "{name}"' in line
    )


async def moved_to(cluster: Cluster, name: str, expected: dict[str, Any], what: str) -> float:
    """Seconds until the plan assigns exactly ``expected``; fails after PROMPT seconds."""
    start = time.monotonic()
    await wait_for(
        lambda: plan_nodes(cluster, name) == expected,
        PROMPT,
        f"{what}: plan {expected}",
        on_timeout=lambda: f"plan now: {plan_nodes(cluster, name)}\n{cluster.op.tail()}",
    )
    return time.monotonic() - start


async def set_ready(cluster: Cluster, node_name: str, ready: bool) -> None:
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    await cluster.send("PATCH", f"/api/v1/nodes/{node_name}", {"status": status}, MERGE)


async def test_node_changes_move_devices_at_once(quiet_cluster: Cluster) -> None:
    cluster = quiet_cluster
    # 120 devices, at most 50 per tower, two Ready nodes: 20 cannot be placed.
    await cluster.send("POST", LOTS_URL, lot("meters", 120), "application/json")
    await moved_to(
        cluster, "meters", {"node-a": [[0, 50]], "node-b": [[50, 100]]}, "the first plan"
    )
    # The timer's first pass is its only one for 300 s: from here on, only the
    # node watch can explain a change.
    await cluster.wait(lambda: timer_passes(cluster, "meters") >= 1, "the first status pass")
    assert cluster.condition("meters", "DevicesAssigned")["reason"] == "CapacityExceeded"  # type: ignore[index]

    # A node that becomes Ready takes nothing from running nodes, only what did not fit.
    await set_ready(cluster, "node-down", True)
    await moved_to(
        cluster,
        "meters",
        {"node-a": [[0, 50]], "node-b": [[50, 100]], "node-down": [[100, 120]]},
        "node-down Ready",
    )
    # The pass writes the status and its Event, as the lot's handlers would.
    await cluster.wait(
        lambda: (cluster.condition("meters", "DevicesAssigned") or {}).get("status") == "True",
        "DevicesAssigned=True after the new node took the rest",
    )
    event = (await cluster.wait(lambda: cluster.events("DevicesAssignedTrue"), "an Event"))[0]
    assert event["involvedObject"]["name"] == "meters"
    assert event["involvedObject"]["kind"] == "MockLot"

    # NotReady: node-a's devices go to the least-loaded nodes, up to their capacity.
    await set_ready(cluster, "node-a", False)
    await moved_to(
        cluster,
        "meters",
        {"node-b": [[50, 100]], "node-down": [[0, 30], [100, 120]]},
        "node-a NotReady",
    )

    # A new Ready node: only the unplaced devices go to it; running ones stay.
    new_node = node("node-c")
    await cluster.send("POST", "/api/v1/nodes", new_node, "application/json")
    await moved_to(
        cluster,
        "meters",
        {"node-b": [[50, 100]], "node-c": [[30, 50]], "node-down": [[0, 30], [100, 120]]},
        "node-c added",
    )

    # Deleted: its devices move; the others keep theirs.
    async with cluster.http.delete(f"{cluster.url}/api/v1/nodes/node-b") as resp:
        assert resp.status < 300
    await moved_to(
        cluster,
        "meters",
        {"node-c": [[30, 80]], "node-down": [[0, 30], [100, 120]]},
        "node-b deleted",
    )
    assert timer_passes(cluster, "meters") == 1


async def test_settings_removed_from_the_lot_leave_the_daemonset(quiet_cluster: Cluster) -> None:
    cluster = quiet_cluster
    tower = {
        "maxDevicesPerTower": 50,
        "nodeSelector": {"kubernetes.io/hostname": "node-a"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "100m"}},
        "env": [{"name": "BROKER_TOKEN", "valueFrom": {"secretKeyRef": {"name": "b", "key": "t"}}}],
        "secretVolumes": [{"secretName": "broker-ca", "mountPath": "/etc/mockfleet/secrets/ca"}],
    }
    await cluster.send(
        "POST", LOTS_URL, lot("meters", 20, version="1.0", tower=tower), "application/json"
    )
    ds = await cluster.wait(lambda: cluster.obj("apps/v1/daemonsets", "meters-tower"), "towers")
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "node-a"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["containers"][0]["resources"]["limits"] == {"memory": "1Gi"}
    assert "BROKER_TOKEN" in {e["name"] for e in pod["containers"][0]["env"]}
    assert ds["metadata"]["labels"]["app.kubernetes.io/version"] == "1.0"
    assert plan_nodes(cluster, "meters") == {"node-a": [[0, 20]]}
    # No credential, not even a reference, in the plan.
    plan_text = json.dumps(cluster.obj("v1/configmaps", "meters-plan"))
    assert "BROKER_TOKEN" not in plan_text and "broker-ca" not in plan_text
    # Others' fields on the DaemonSet (a controller's annotation, the status) must survive.
    others = {
        "metadata": {"annotations": {"deprecated.daemonset.template.generation": "1"}},
        "status": {"numberReady": 0, "desiredNumberScheduled": 1},
    }
    await cluster.send(
        "PATCH", f"/apis/apps/v1/namespaces/{NS}/daemonsets/meters-tower", others, MERGE
    )

    removal = {
        "spec": {
            "version": None,
            "tower": {
                "nodeSelector": None,
                "tolerations": None,
                "resources": {"limits": None},
                "env": None,
                "secretVolumes": None,
            },
        }
    }
    await cluster.send("PATCH", f"{LOTS_URL}/meters", removal, MERGE)

    def trimmed() -> dict[str, Any] | None:
        found = cluster.obj("apps/v1/daemonsets", "meters-tower") or {}
        spec = found.get("spec", {}).get("template", {}).get("spec", {})
        return found if spec and "nodeSelector" not in spec else None

    ds = await cluster.wait(trimmed, "the DaemonSet without the nodeSelector")
    pod = ds["spec"]["template"]["spec"]
    (tower_container,) = pod["containers"]
    assert "tolerations" not in pod
    assert tower_container["resources"] == {"requests": {"cpu": "100m"}}
    assert "BROKER_TOKEN" not in {e["name"] for e in tower_container["env"]}
    assert not any(v["name"].startswith("secret-") for v in pod["volumes"])
    assert "app.kubernetes.io/version" not in ds["metadata"]["labels"]
    assert ds["metadata"]["annotations"]["deprecated.daemonset.template.generation"] == "1"
    assert ds["status"] == others["status"]
    # The plan follows too: both Ready nodes are eligible now (running devices stay
    # where they are); and it lost its version label as well.
    await moved_to(cluster, "meters", {"node-a": [[0, 20]], "node-b": []}, "selector gone")
    cm = cluster.obj("v1/configmaps", "meters-plan")
    assert "app.kubernetes.io/version" not in cm["metadata"]["labels"]  # type: ignore[index]
