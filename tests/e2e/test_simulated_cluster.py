"""End to end on a simulated cluster: the real operator (a kopf process), real
towers and real devices, with the API server emulated and pods run as local
processes by a kubelet stand-in (``support.kubelet``; read its module doc for
what is and is not simulated).

The tests share one cluster and one lot and run in file order, each phase
starting from where the previous one left it: 300 devices on 3 nodes, scale
to 450, lose a node, pause and resume, delete.

Plan changes reach the towers the way they do on a real cluster: the kubelet
stand-in refreshes a ConfigMap volume when it syncs the pod (on a pod update
or once a minute), so plan changes arrive quickly only because the operator
touches the tower pods' plan-generation annotation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from support.emulator_thread import EmulatorThread
from support.k8s_operator import OperatorProcess, free_port, write_kubeconfig
from support.kube_api import Api
from support.polling import wait_for
from support.sim_cluster import Cluster
from support.sim_cluster import log as sim_log
from support.sim_lot import LotChecks
from support.tower_harness import no_leftovers

from mockfleet.operator.towerpods import PLAN_ANNOTATION

NS = "default"
LOT = "e2e-meters"
NODES = ["node-a", "node-b", "node-c"]
GONE_NODE = "node-c"
RECEIVE = [sys.executable, "-m", "mockfleet.operator.entry", "receive"]


def node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def lot(devices: int, ingest: str) -> dict[str, Any]:
    return {
        "apiVersion": "mockfleet.dev/v1alpha1",
        "kind": "MockLot",
        "metadata": {"name": LOT, "namespace": NS},
        "spec": {
            "devices": devices,
            "seed": 3,
            "timing": {"interval": "1s"},
            "payload": {"template": {"reading": {"$gen": "uniform", "min": 0, "max": 10}}},
            "sink": {"type": "http", "url": f"{ingest}/ingest/{{id}}"},
            "tower": {"maxDevicesPerTower": 1000, "stopGracePeriod": "5s"},
        },
    }


class ReceiverProcess:
    """``mockfleet receive`` in its own process: 450 posts a second would otherwise
    compete for this process's GIL with the API server, kubelets and test."""

    def __init__(self, log: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*RECEIVE, "--quiet", "--http", f"127.0.0.1:{port}"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        wait_for(self.healthy, 30)

    def healthy(self) -> bool:
        assert self.proc.poll() is None, "mockfleet receive exited"
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                return True
        except OSError:
            return False

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as resp:
            return dict(json.loads(resp.read()))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class Sim(LotChecks):
    """The simulated cluster and what the tests read from it."""

    lot_name = LOT
    poll_interval = 0.5

    api: Api
    cluster: Cluster
    operator: OperatorProcess
    receiver: ReceiverProcess
    timings: dict[str, float] = field(default_factory=dict)
    #: Phases that passed: each test starts where the previous one left the lot.
    done: set[str] = field(default_factory=set)

    # ------------------------------------------------------------------ the lot

    def plan_configmap(self) -> dict[str, Any]:
        return self.api.get("v1", "configmaps", NS, f"{LOT}-plan") or {}

    def plan(self) -> dict[str, Any]:
        cm = self.plan_configmap()
        return dict(json.loads((cm.get("data") or {}).get("plan.json") or "{}"))

    def pods_noted_plan(self) -> bool:
        """Every tower pod carries the plan ConfigMap's current resourceVersion."""
        version = self.plan_configmap().get("metadata", {}).get("resourceVersion")
        pods = self.api.list("v1", "pods", NS)
        return bool(pods) and all(
            (p["metadata"].get("annotations") or {}).get(PLAN_ANNOTATION) == version for p in pods
        )

    def ready_with(self, running: int) -> bool:
        st = self.status()
        return st.get("running") == running and self.condition("Ready").get("status") == "True"

    # ------------------------------------------------------------------ the towers

    def device_nodes(self) -> list[tuple[str, str]]:
        """(mock id, node) of every device with a PID file: cheap enough to poll."""
        out = []
        for tower in self.cluster.towers():
            if tower.state_dir is not None:
                with contextlib.suppress(OSError):
                    out += [(p.name, tower.node) for p in (tower.state_dir / "pids").iterdir()]
        return out

    def devices(self) -> list[tuple[str, str, int]]:
        """(mock id, node, pid) of every device with a PID file in a running tower."""
        out = []
        for tower in self.cluster.towers():
            if tower.state_dir is None:
                continue
            with contextlib.suppress(OSError):
                for path in (tower.state_dir / "pids").iterdir():
                    with contextlib.suppress(ValueError, OSError, KeyError):
                        pid = int(json.loads(path.read_text())["pid"])
                        out.append((path.name, tower.node, pid))
        return out

    def placement(self) -> dict[str, tuple[str, int]]:
        """mock id -> (node, pid); fails when a device runs on two nodes."""
        seen: dict[str, tuple[str, int]] = {}
        for mock_id, where, pid in self.devices():
            assert mock_id not in seen, f"{mock_id} runs twice: {seen[mock_id]} and {(where, pid)}"
            seen[mock_id] = (where, pid)
        return seen

    # ------------------------------------------------------------------ waiting

    def diagnostics(self) -> str:
        st = self.status()
        summary = {k: st.get(k) for k in ("desired", "assigned", "running", "towers")}
        conds = {c["type"]: (c["status"], c.get("message")) for c in st.get("conditions") or []}
        return (
            f"status={summary} conditions={conds}\nplan={self.plan().get('nodes')}\n"
            f"towers={[(p.node, p.name, p.port) for p in self.cluster.towers()]}\n"
            f"devices={len(self.device_nodes())} cluster errors={self.cluster.errors[-3:]}\n"
            f"operator log:\n{self.operator.tail(25)}"
        )


#: processes this test process had before the cluster (e.g. a session MQTT
#: broker from other tests): not the cluster's, so never counted as left over
_PREEXISTING: set[int] = set()


def live_children() -> list[psutil.Process]:
    """Live processes started by this test process (zombies excluded)."""
    alive = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if proc.pid not in _PREEXISTING and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    work = tmp_path_factory.mktemp("sim-cluster")
    _PREEXISTING.update(p.pid for p in psutil.Process().children(recursive=True))
    trace = logging.FileHandler(work / "cluster.log")
    trace.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    sim_log.addHandler(trace)
    sim_log.setLevel(logging.INFO)
    with no_leftovers(), EmulatorThread([NS]) as server:
        receiver = ReceiverProcess(work / "receiver.log")
        api = Api(server.url)
        operator = None
        try:
            for name in NODES:
                api.create("v1", "nodes", None, node(name))
            kubeconfig = write_kubeconfig(work / "kubeconfig", server.url)
            operator = OperatorProcess(kubeconfig, work / "operator.log", NS, status_interval=1.0)
            # sync_period far beyond the test: only pod updates refresh the plan volume.
            with Cluster(server.url, NS, NODES, work / "nodes", sync_period=600.0) as cluster:
                yield Sim(api, cluster, operator, receiver)
        finally:
            if operator is not None:
                operator.stop()
            receiver.stop()
            api.close()
            sim_log.removeHandler(trace)
            trace.close()


def test_lot_runs_300_devices_on_3_nodes(sim: Sim) -> None:
    ingest = sim.receiver.url
    started = time.monotonic()
    sim.api.create("mockfleet.dev/v1alpha1", "mocklots", NS, lot(300, ingest))

    sim.until(lambda: sim.ready_with(300), "300 running and Ready=True")
    sim.timings["300 running"] = time.monotonic() - started
    placement = sim.placement()
    assert len(placement) == 300
    by_node = {n: sum(1 for where, _ in placement.values() if where == n) for n in NODES}
    assert by_node == {"node-a": 100, "node-b": 100, "node-c": 100}
    # The tower on each node runs exactly its ranges of the plan.
    for name, ranges in sim.plan()["nodes"].items():
        wanted = {f"{LOT}-{i}" for start, end in ranges for i in range(start, end)}
        assert {m for m, (where, _) in placement.items() if where == name} == wanted
    status = sim.status()
    assert status["towers"] == 3
    assert status["assigned"] == 300
    assert sim.condition("TowersReady")["status"] == "True"
    assert sim.condition("Degraded")["status"] == "False"
    # Devices really send, to the receiver on the loopback.
    sim.until(lambda: sim.receiver.stats()["devices"] >= 300, "messages from all 300 devices")
    # The operator noted the plan version on each tower pod (what makes kubelets resync).
    sim.until(sim.pods_noted_plan, "the plan-generation annotation on every tower pod")
    assert sim.cluster.crashes() == []
    sim.done.add("300 running")


def test_scale_up_starts_only_new_devices(sim: Sim) -> None:
    sim.after("300 running")
    before = sim.placement()
    assert len(before) == 300
    started = time.monotonic()
    sim.patch_spec({"devices": 450})

    sim.until(lambda: sim.ready_with(450) and len(sim.device_nodes()) == 450, "450 running")
    sim.timings["scale 300 -> 450"] = time.monotonic() - started
    after = sim.placement()
    assert set(after) == {f"{LOT}-{i}" for i in range(450)}
    moved = {m: (before[m], after[m]) for m in before if after[m] != before[m]}
    assert not moved, f"running devices were restarted or moved: {moved}"
    assert sim.status()["observedGeneration"] == 2
    # The new plan reached the towers through a pod sync, not the periodic one (600 s).
    assert all(n >= 2 for n in sim.cluster.projections().values())
    sim.done.add("scaled")


def test_removed_node_devices_move_to_the_others(sim: Sim) -> None:
    sim.after("scaled")
    before = sim.placement()
    orphans = {m for m, (where, _) in before.items() if where == GONE_NODE}
    assert len(orphans) == 150
    started = time.monotonic()
    assert sim.api.delete("v1", "nodes", None, GONE_NODE)

    def moved() -> bool:
        if not sim.ready_with(450):
            return False
        now = sim.device_nodes()
        return len(now) == 450 and GONE_NODE not in {where for _, where in now}

    sim.until(moved, f"450 devices running on the nodes left after deleting {GONE_NODE}")
    sim.timings["node removal -> 450 running elsewhere"] = time.monotonic() - started
    after = sim.placement()  # also: no device runs twice
    assert set(after) == {f"{LOT}-{i}" for i in range(450)}
    assert {where for where, _ in after.values()} == {"node-a", "node-b"}
    # Only the orphans moved; devices on the remaining nodes kept running as they were.
    stayed = {m for m in before if m not in orphans}
    assert {m for m in stayed if after[m] != before[m]} == set()
    assert sorted(sim.plan()["nodes"]) == ["node-a", "node-b"]
    assert sim.status()["towers"] == 2
    assert not [p for p in sim.cluster.towers() if p.node == GONE_NODE]
    sim.until(lambda: sim.cluster.stopping() == 0, f"the tower on {GONE_NODE} to exit")
    sim.done.add("node removed")


def test_pause_stops_every_device_and_resume_restarts_them(sim: Sim) -> None:
    sim.after("node removed")
    started = time.monotonic()
    sim.patch_spec({"paused": True})
    sim.until(lambda: not sim.device_nodes(), "every device to stop")
    sim.timings["pause -> 0 running"] = time.monotonic() - started
    sim.until(
        lambda: (
            sim.status().get("running") == 0 and sim.condition("Ready").get("reason") == "Paused"
        ),
        "running=0 and Ready=False (Paused)",
    )
    assert sim.condition("Ready")["status"] == "False"
    assert len(sim.cluster.towers()) == 2  # the towers stay, idle

    started = time.monotonic()
    sim.patch_spec({"paused": False})
    sim.until(lambda: sim.ready_with(450) and len(sim.device_nodes()) == 450, "450 running again")
    sim.timings["resume -> 450 running"] = time.monotonic() - started
    assert set(sim.placement()) == {f"{LOT}-{i}" for i in range(450)}
    sim.done.add("resumed")


def test_deleting_the_lot_stops_everything(sim: Sim) -> None:
    sim.after("resumed")
    started = time.monotonic()
    assert sim.api.delete("mockfleet.dev/v1alpha1", "mocklots", NS, LOT)
    sim.until(lambda: sim.lot() is None, "the lot to be gone (the operator's finalizer released)")
    sim.until(
        lambda: (
            not sim.api.list("apps/v1", "daemonsets", NS)
            and not sim.api.list("v1", "configmaps", NS)
            and not sim.api.list("v1", "pods", NS)
        ),
        "the DaemonSet, ConfigMap and pods to be garbage-collected",
    )
    sim.until(
        lambda: not sim.cluster.towers() and sim.cluster.stopping() == 0, "every tower to exit"
    )
    ours = {sim.operator.proc.pid, sim.receiver.proc.pid}
    sim.until(
        lambda: {p.pid for p in live_children()} == ours,
        "no process but the operator and the receiver left",
        timeout=30,
    )
    sim.timings["delete -> nothing left"] = time.monotonic() - started
    assert sorted(sim.cluster.gc.collected)[:2] == [
        f"configmaps/{LOT}-plan",
        f"daemonsets/{LOT}-tower",
    ]
    assert sim.cluster.crashes() == []
    assert sim.cluster.errors == []
    print("timings (s):", {k: round(v, 1) for k, v in sim.timings.items()})
