"""End to end on a simulated cluster: a version change upgrades the towers in
place, and no device restarts.

The real operator (a kopf process) and real towers running real devices, with
the API server emulated, pods run as local processes by the kubelet stand-in
(``support.kubelet``) and the artifact served by moto's S3 server. The tests
share one cluster and one lot and run in file order:

1. 60 devices on 2 nodes at version 1.0.0 (the towers are started as 1.0.0,
   like an image of that version), sending to a loopback receiver;
2. ``spec.version: 2.0.0`` with an artifact in S3: every tower re-executes
   itself as 2.0.0 (same PID), every device keeps its process and keeps
   sending, and the lot's ``status.versions`` follows the rollout;
3. ``spec.version: 2.0.1`` with a wrong sha256: the towers refuse it and stay
   on 2.0.0, the lot is ``Upgraded=False`` and ``Degraded=True`` (reason
   ``UpgradeFailed``, the checksum in the message) with a Warning Event, and
   still nothing restarts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from support.emulator_thread import EmulatorThread
from support.k8s_operator import OperatorProcess, write_kubeconfig
from support.kube_api import Api
from support.kubelet import RunningPod
from support.moto_s3 import CREDENTIALS, MotoS3, moto_s3_server
from support.sim_cluster import Cluster
from support.sim_cluster import log as sim_log
from support.sim_lot import LOTS_API, LotChecks
from support.tower_harness import no_leftovers
from test_simulated_cluster import ReceiverProcess, node

from mockfleet.tower.upgrade import build_artifact

NS = "default"
LOT = "e2e-upgrade"
NODES = ["node-a", "node-b"]
DEVICES = 60
BUCKET = "mockfleet-releases"
KEY = "mockfleet-2.0.0.zip"
REPO = Path(__file__).resolve().parents[2]


def lot(ingest: str) -> dict[str, Any]:
    return {
        "apiVersion": "mockfleet.dev/v1alpha1",
        "kind": "MockLot",
        "metadata": {"name": LOT, "namespace": NS},
        "spec": {
            "devices": DEVICES,
            "version": "1.0.0",
            "deviceId": "{lot}-{index}",
            "seed": 5,
            "timing": {"interval": "1s"},
            "payload": {"template": {"reading": {"$gen": "uniform", "min": 0, "max": 10}}},
            "sink": {"type": "http", "url": f"{ingest}/ingest/{{id}}"},
            "tower": {"maxDevicesPerTower": 1000, "stopGracePeriod": "5s"},
        },
    }


@dataclass(frozen=True)
class Proc:
    """A process by PID and start time: a restart (even one reusing the PID) changes it."""

    pid: int
    started: float

    @classmethod
    def of(cls, pid: int) -> Proc:
        return cls(pid, psutil.Process(pid).create_time())


@dataclass
class Sim(LotChecks):
    lot_name = LOT

    api: Api
    cluster: Cluster
    operator: OperatorProcess
    receiver: ReceiverProcess
    s3: MotoS3
    work: Path
    timings: dict[str, float] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    #: mock id -> process, and node -> tower process, as recorded at 1.0.0
    devices_before: dict[str, Proc] = field(default_factory=dict)
    towers_before: dict[str, Proc] = field(default_factory=dict)

    # ------------------------------------------------------------------ the lot

    def warnings(self) -> list[dict[str, Any]]:
        return [e for e in self.api.list("v1", "events", NS) if e.get("type") == "Warning"]

    # ------------------------------------------------------------------ the towers

    def towers(self) -> dict[str, RunningPod]:
        pods = self.cluster.towers()
        return {p.node: p for p in pods}

    def tower_status(self, pod: RunningPod) -> dict[str, Any] | None:
        try:
            url = f"http://127.0.0.1:{pod.port}/status"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return dict(json.loads(resp.read()))
        except (OSError, ValueError):
            return None  # re-executing, or not up yet

    def tower_versions(self) -> dict[str, str | None]:
        out = {}
        for name, pod in self.towers().items():
            st = self.tower_status(pod)
            out[name] = st.get("version") if st else None
        return out

    def tower_events(self, pod: RunningPod) -> list[dict[str, Any]]:
        assert pod.state_dir is not None
        path = pod.state_dir / "events.jsonl"
        events = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    def device_pids(self) -> dict[str, int]:
        """mock id -> PID from every tower's PID files."""
        out: dict[str, int] = {}
        for pod in self.towers().values():
            assert pod.state_dir is not None
            with contextlib.suppress(OSError):
                for path in (pod.state_dir / "pids").iterdir():
                    with contextlib.suppress(ValueError, OSError, KeyError):
                        assert path.name not in out, f"{path.name} runs on two nodes"
                        out[path.name] = int(json.loads(path.read_text())["pid"])
        return out

    def devices_now(self) -> dict[str, Proc]:
        out = {}
        for mock_id, pid in self.device_pids().items():
            with contextlib.suppress(psutil.NoSuchProcess):
                out[mock_id] = Proc.of(pid)
        return out

    def towers_now(self) -> dict[str, Proc]:
        return {name: Proc.of(pod.proc.pid) for name, pod in self.towers().items()}

    def assert_nothing_restarted(self) -> None:
        """Same tower processes (in-place exec keeps the PID), same device processes,
        no exit in any tower's event log, no container restart."""
        assert self.towers_now() == self.towers_before
        for name, pod in self.towers().items():
            st = self.tower_status(pod)
            assert st is not None and st["pid"] == self.towers_before[name].pid
            exits = [e for e in self.tower_events(pod) if e.get("event") == "exited"]
            assert exits == [], f"devices exited on {name}: {exits[:3]}"
        assert self.devices_now() == self.devices_before
        assert self.cluster.crashes() == []
        assert [p.restarts for p in self.towers().values()] == [0] * len(NODES)

    def received(self) -> dict[str, int]:
        """Messages received per device id."""
        with urllib.request.urlopen(f"{self.receiver.url}/stats?per_device=1", timeout=5) as r:
            report = json.loads(r.read())
        return {dev: int(s["received"]) for dev, s in (report.get("per_device") or {}).items()}

    def all_sent_since(self, before: dict[str, int], more: int) -> bool:
        now = self.received()
        return len(now) == DEVICES and all(now[d] >= before.get(d, 0) + more for d in now)

    # ------------------------------------------------------------------ waiting

    def diagnostics(self) -> str:
        st = self.status()
        summary = {k: st.get(k) for k in ("desired", "running", "towers", "versions")}
        conds = {c["type"]: (c["status"], c.get("message")) for c in st.get("conditions") or []}
        events = self.api.list("v1", "events", NS)
        return (
            f"status={summary} conditions={conds}\ntower versions={self.tower_versions()}\n"
            f"devices={len(self.device_pids())} cluster errors={self.cluster.errors[-3:]}\n"
            f"events={[(e.get('type'), e.get('reason'), e.get('message')) for e in events]}\n"
            f"operator log:\n{self.operator.tail(25)}"
        )


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    work = tmp_path_factory.mktemp("sim-upgrade")
    trace = logging.FileHandler(work / "cluster.log")
    trace.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    sim_log.addHandler(trace)
    sim_log.setLevel(logging.INFO)
    # The kubelet stand-in gives containers this process's environment: the towers
    # start as version 1.0.0 and find S3 credentials (moto takes any) where boto3 looks.
    with pytest.MonkeyPatch.context() as env, no_leftovers():
        env.setenv("MOCKFLEET_TOWER_VERSION", "1.0.0")
        for name, value in CREDENTIALS.items():
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE"):
            env.delenv(name, raising=False)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(work / "no-credentials"))
        env.setenv("NO_PROXY", "127.0.0.1,localhost")
        with moto_s3_server(work) as s3, EmulatorThread([NS]) as server:
            receiver = ReceiverProcess(work / "receiver.log")
            api = Api(server.url)
            operator = None
            try:
                for name in NODES:
                    api.create("v1", "nodes", None, node(name))
                kubeconfig = write_kubeconfig(work / "kubeconfig", server.url)
                operator = OperatorProcess(kubeconfig, work / "operator.log", NS, 1.0)
                # Only pod updates refresh the plan volume (sync period beyond the test).
                # Leaving it SIGTERMs the towers, which stop their devices.
                with Cluster(server.url, NS, NODES, work / "nodes", sync_period=600.0) as cluster:
                    yield Sim(api, cluster, operator, receiver, s3, work)
            finally:
                if operator is not None:
                    operator.stop()
                receiver.stop()
                api.close()
                sim_log.removeHandler(trace)
                trace.close()


def test_lot_runs_at_1_0_0(sim: Sim) -> None:
    started = time.monotonic()
    sim.api.create(*LOTS_API, NS, lot(sim.receiver.url))

    def ready() -> bool:
        st = sim.status()
        return (
            st.get("running") == DEVICES
            and sim.condition("Ready").get("status") == "True"
            and len(sim.device_pids()) == DEVICES
        )

    sim.until(ready, f"{DEVICES} running and Ready=True")
    sim.timings["60 running"] = time.monotonic() - started
    assert sim.tower_versions() == dict.fromkeys(NODES, "1.0.0")
    sim.until(
        lambda: sim.status().get("versions") == [{"version": "1.0.0", "towers": 2}],
        "status.versions: both towers on 1.0.0",
    )
    assert sim.condition("Degraded")["status"] == "False"
    upgraded = sim.condition("Upgraded")
    assert (upgraded["status"], upgraded["message"]) == ("True", "2 towers on 1.0.0")
    sim.until(lambda: len(sim.received()) == DEVICES, "messages from every device")
    sim.devices_before = sim.devices_now()
    sim.towers_before = sim.towers_now()
    assert sorted(sim.devices_before) == sorted(f"{LOT}-{i}" for i in range(DEVICES))
    assert sorted(sim.towers_before) == NODES
    sim.done.add("1.0.0")


def test_version_change_upgrades_towers_in_place(sim: Sim) -> None:
    sim.after("1.0.0")
    artifact = sim.work / KEY
    sha = build_artifact(artifact, [str(REPO / "tower"), str(REPO / "mock")])
    client = sim.s3.client()
    client.create_bucket(Bucket=BUCKET)
    client.upload_file(str(artifact), BUCKET, KEY)
    source = {"source": f"s3://{BUCKET}/{KEY}", "sha256": sha, "endpointUrl": sim.s3.endpoint_url}
    warned = {(w.get("reason"), w.get("message")) for w in sim.warnings()}
    started = time.monotonic()
    sim.patch_spec({"version": "2.0.0", "artifact": source})

    sim.until(
        lambda: sim.tower_versions() == dict.fromkeys(NODES, "2.0.0"),
        "every tower to report version 2.0.0",
    )
    sim.timings["2.0.0 on every tower"] = time.monotonic() - started
    sim.until(
        lambda: (
            sim.status().get("versions") == [{"version": "2.0.0", "towers": 2}]
            and sim.status().get("running") == DEVICES
            and sim.condition("Ready").get("status") == "True"
            and sim.condition("Degraded").get("status") == "False"
            and sim.condition("Upgraded").get("message") == "2 towers on 2.0.0"
        ),
        "status.versions: both towers on 2.0.0, the lot Ready and not Degraded",
    )
    assert sim.condition("Upgraded")["status"] == "True"
    sim.timings["status shows 2.0.0"] = time.monotonic() - started
    # A good rollout is no cause for alarm: the spec change did not make the
    # towers look silent (the status flapping to not Ready with Warnings).
    new_warnings = [
        (w.get("reason"), w.get("message"))
        for w in sim.warnings()
        if (w.get("reason"), w.get("message")) not in warned
    ]
    assert new_warnings == []

    # The towers re-executed themselves: same process, once, from the S3 artifact.
    for name, pod in sim.towers().items():
        events = sim.tower_events(pod)
        kinds = [e["event"] for e in events]
        assert kinds.count("upgrade-exec") == 1, name
        (complete,) = [e for e in events if e["event"] == "upgrade-complete"]
        assert complete["version"] == "2.0.0" and complete["pid"] == sim.towers_before[name].pid
        fetching = next(e for e in events if e["event"] == "upgrade-fetching")
        assert fetching["source"] == source["source"]
        st = sim.tower_status(pod)
        assert st is not None and st["upgrade_error"] is None
    sim.assert_nothing_restarted()

    # The devices never stopped sending: every one of them is heard from again,
    # with no gap and no repeat in its sequence numbers (a restart would repeat them).
    mark = sim.received()
    sim.until(lambda: sim.all_sent_since(mark, 2), "two more messages from every device")
    with urllib.request.urlopen(f"{sim.receiver.url}/stats", timeout=5) as resp:
        report = json.loads(resp.read())
    assert report["devices"] == DEVICES
    assert (report["lost"], report["duplicates"], report["malformed"]) == (0, 0, 0)
    sim.assert_nothing_restarted()
    sim.done.add("2.0.0")


def test_a_wrong_checksum_keeps_2_0_0_and_says_why(sim: Sim) -> None:
    sim.after("2.0.0")
    spec = (sim.api.get(*LOTS_API, NS, LOT) or {})["spec"]
    bad = {**spec["artifact"], "sha256": "f" * 64}
    started = time.monotonic()
    sim.patch_spec({"version": "2.0.1", "artifact": bad})

    def refused() -> dict[str, Any]:
        cond = sim.condition("Upgraded")
        # both towers: each fetches and checks the artifact on its own
        return cond if "failed on 2 towers" in cond.get("message", "") else {}

    cond = sim.until(refused, "Upgraded=False: the upgrade failed on both towers")
    sim.timings["bad checksum -> status says why"] = time.monotonic() - started
    assert (cond["status"], cond["reason"]) == ("False", "UpgradeFailed")
    assert cond["message"].startswith("upgrade to 2.0.1 failed on 2 towers (node-a, node-b): ")
    assert "sha256 mismatch: expected " + "f" * 64 in cond["message"]
    degraded = sim.condition("Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "UpgradeFailed")
    assert degraded["message"] == cond["message"]
    # The devices run on: the lot stays Ready, on 2.0.0.
    assert sim.condition("Ready")["status"] == "True"
    assert sim.status()["versions"] == [{"version": "2.0.0", "towers": 2}]
    warning = sim.until(
        lambda: [
            w
            for w in sim.warnings()
            if w.get("reason") == "UpgradedFalse" and "sha256 mismatch" in w.get("message", "")
        ],
        "a Warning Event about the failed upgrade",
    )[0]
    assert warning["message"].startswith("upgrade to 2.0.1 failed on ")
    assert warning["involvedObject"]["name"] == LOT

    assert sim.tower_versions() == dict.fromkeys(NODES, "2.0.0")
    for name, pod in sim.towers().items():
        st = sim.tower_status(pod)
        assert st is not None
        assert st["upgrade_error"]["version"] == "2.0.1", name
        assert "sha256 mismatch" in st["upgrade_error"]["reason"]
        failed = [e for e in sim.tower_events(pod) if e["event"] == "upgrade-failed"]
        assert [e["version"] for e in failed] == ["2.0.1"], name
        assert pod.state_dir is not None and not (pod.state_dir / "versions" / "2.0.1").exists()
    sim.assert_nothing_restarted()
    mark = sim.received()
    sim.until(lambda: sim.all_sent_since(mark, 1), "every device still sending")
    assert sim.cluster.errors == []
    print("timings (s):", {k: round(v, 1) for k, v in sim.timings.items()})
