"""Pure builders: plan ConfigMap, tower DaemonSet, names, node eligibility, status."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from mockfleet.mock.lot import MockLot, load_lot, parse_lot
from mockfleet.operator.builders import (
    PLAN_DIR,
    STATE_DIR,
    build_plan_configmap,
    build_tower_daemonset,
    read_plan,
)
from mockfleet.operator.kube import is_subset
from mockfleet.operator.names import dns_label, plan_configmap_name, tower_daemonset_name
from mockfleet.operator.nodes import eligible_nodes
from mockfleet.operator.settings import OperatorSettings
from mockfleet.operator.status import (
    TowerReport,
    build_status,
    get_condition,
    invalid_status,
    set_condition,
)

ROOT = Path(__file__).resolve().parent.parent
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def make_lot(name: str = "meters", **spec: Any) -> MockLot:
    return parse_lot(
        {
            "apiVersion": "mockfleet.dev/v1alpha1",
            "kind": "MockLot",
            "metadata": {"name": name, "namespace": "iot", "uid": "u-1", "generation": 3},
            "spec": {"devices": 10, **spec},
        }
    )


def container(ds: dict[str, Any]) -> dict[str, Any]:
    containers = ds["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_plan_configmap_holds_the_lot_and_the_assignment() -> None:
    lot = load_lot(ROOT / "examples" / "thermostats.yaml")
    cm = build_plan_configmap(lot, {"n2": [(4, 8)], "n1": [(0, 4)]}, generation=7)
    assert cm["metadata"]["name"] == "thermostats-plan"
    assert cm["metadata"]["labels"]["mockfleet.dev/lot"] == "thermostats"
    plan = json.loads(cm["data"]["plan.json"])
    assert plan == {
        "generation": 7,
        "lot": "thermostats",
        "version": None,
        "paused": False,
        "devices": 50,
        "nodes": {"n1": [[0, 4]], "n2": [[4, 8]]},
    }
    again = yaml.safe_load(cm["data"]["lot.yaml"])
    assert parse_lot(again) == lot.model_copy(update={"status": None})
    assert "uid" not in again["metadata"]
    assert read_plan(cm) == {"n1": [(0, 4)], "n2": [(4, 8)]}


def test_plan_follows_pause_and_version() -> None:
    cm = build_plan_configmap(make_lot(paused=True, version="0.2.0"), {})
    plan = json.loads(cm["data"]["plan.json"])
    assert plan["paused"] is True
    assert plan["version"] == "0.2.0"


def test_read_plan_tolerates_garbage() -> None:
    assert read_plan({}) == {}
    assert read_plan({"data": {"plan.json": "{not json"}}) == {}
    assert read_plan({"data": {"plan.json": '{"nodes": {"a": [[0, 1], [1, 3]]}}'}}) == {
        "a": [(0, 3)]
    }


def test_daemonset_runs_the_tower_hardened() -> None:
    lot = make_lot(tower={"stopGracePeriod": "20s"})
    ds = build_tower_daemonset(lot, OperatorSettings(image="example/mockfleet:1"))
    pod = ds["spec"]["template"]["spec"]
    c = container(ds)
    assert ds["metadata"]["name"] == "meters-tower"
    assert c["image"] == "example/mockfleet:1"
    assert c["command"] == [
        "mockfleet",
        "tower",
        "--root",
        "/var/lib/mockfleet",
        "--plan",
        "/etc/mockfleet/plan",
        "--http",
        "0.0.0.0:8080",
    ]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["terminationGracePeriodSeconds"] == 25
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts[PLAN_DIR]["readOnly"] is True
    assert STATE_DIR in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[PLAN_DIR]["name"]]["configMap"]["name"] == "meters-plan"
    assert "emptyDir" in volumes[mounts[STATE_DIR]["name"]]
    # The selector must select the pod template (the API server refuses otherwise).
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert is_subset(ds["spec"]["selector"]["matchLabels"], labels)
    assert labels["app.kubernetes.io/name"] == "mockfleet"
    assert labels["mockfleet.dev/lot"] == "meters"


def test_daemonset_takes_the_lot_tower_settings() -> None:
    lot = make_lot(
        tower={
            "image": "registry.local/mf:dev",
            "resources": {"limits": {"memory": "2Gi"}},
            "nodeSelector": {"pool": "load"},
            "tolerations": [{"key": "load", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"x": 1}},
        }
    )
    ds = build_tower_daemonset(lot, OperatorSettings())
    pod = ds["spec"]["template"]["spec"]
    assert container(ds)["image"] == "registry.local/mf:dev"
    assert container(ds)["resources"] == {"limits": {"memory": "2Gi"}}
    assert pod["nodeSelector"] == {"pool": "load"}
    assert pod["tolerations"] == [{"key": "load", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["affinity"] == {"nodeAffinity": {"x": 1}}


def test_version_change_does_not_touch_the_pod_template() -> None:
    a = build_tower_daemonset(make_lot(version="0.1.0"), OperatorSettings())
    b = build_tower_daemonset(make_lot(version="0.2.0"), OperatorSettings())
    assert a["spec"]["template"] == b["spec"]["template"]


def test_long_names_stay_valid_and_distinct() -> None:
    long_a = "a" * 60 + "-x"
    long_b = "a" * 60 + "-y"
    for name in (long_a, long_b, "short"):
        for derived in (plan_configmap_name(name), tower_daemonset_name(name), dns_label(name)):
            assert len(derived) <= 63
            assert DNS_1123.match(derived), derived
    assert tower_daemonset_name(long_a) != tower_daemonset_name(long_b)
    assert dns_label("Bad_Name") != dns_label("bad-name")


def _node(name: str, ready: str = "True", **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "metadata": {"name": name, "labels": extra.pop("labels", {})},
        "spec": extra.pop("spec", {}),
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }
    return node


def test_eligible_nodes_ready_selected_untainted() -> None:
    nodes = [
        _node("w1", labels={"pool": "load"}),
        _node("w2", labels={"pool": "load"}, ready="False"),
        _node("w3", labels={"pool": "other"}),
        _node("w4", labels={"pool": "load"}, spec={"unschedulable": True}),
        _node(
            "w5",
            labels={"pool": "load"},
            spec={"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]},
        ),
        _node(
            "w6",
            labels={"pool": "load"},
            spec={"taints": [{"key": "soft", "effect": "PreferNoSchedule"}]},
        ),
    ]
    lot = make_lot(tower={"nodeSelector": {"pool": "load"}})
    assert eligible_nodes(nodes, lot) == ["w1", "w6"]
    tolerant = make_lot(
        tower={
            "nodeSelector": {"pool": "load"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "x"}],
        }
    )
    assert eligible_nodes(nodes, tolerant) == ["w1", "w5", "w6"]


def test_condition_transition_time_changes_only_on_flips() -> None:
    conds = set_condition([], "Ready", False, "Starting", "0 of 3", "T1")
    conds = set_condition(conds, "Ready", False, "Starting", "1 of 3", "T2")
    assert get_condition(conds, "Ready") == {
        "type": "Ready",
        "status": "False",
        "reason": "Starting",
        "message": "1 of 3",
        "lastTransitionTime": "T1",
    }
    conds = set_condition(conds, "Ready", True, "Running", "3 running", "T3")
    assert get_condition(conds, "Ready")["lastTransitionTime"] == "T3"  # type: ignore[index]


def _status(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "devices": 10,
        "paused": False,
        "assignment": {"a": [(0, 5)], "b": [(5, 10)]},
        "reports": [],
        "conditions": [],
        "generation": 2,
        "selector": "s",
        "now": "T",
    }
    args.update(kw)
    return build_status(**args)


def _cond(status: dict[str, Any], type_: str) -> tuple[str, str]:
    c = get_condition(status["conditions"], type_)
    assert c is not None
    return c["status"], c["reason"]


def test_status_sums_tower_reports_and_is_ready_when_all_run() -> None:
    reports = [
        TowerReport("a", "p1", {"running": 5, "failed": 0, "succeeded": 0, "sent": 100}),
        TowerReport("b", "p2", {"running": 5, "sent": 50}),
    ]
    status = _status(reports=reports)
    assert status["running"] == 10
    assert status["messages"] == 150
    assert status["towers"] == 2
    assert status["assigned"] == 10
    assert status["observedGeneration"] == 2
    assert _cond(status, "Ready") == ("True", "Running")
    assert _cond(status, "TowersReady") == ("True", "AllReporting")
    assert _cond(status, "DevicesAssigned") == ("True", "AllAssigned")
    assert _cond(status, "Degraded") == ("False", "AsExpected")
    assert _cond(status, "Invalid") == ("False", "Valid")


def test_status_degraded_when_towers_silent_or_devices_fail() -> None:
    reports = [
        TowerReport("a", "p1", {"running": 4, "failed": 1}),
        TowerReport("b", "p2", None, "timeout"),
    ]
    status = _status(reports=reports)
    assert _cond(status, "TowersReady") == ("False", "TowersNotReporting")
    assert _cond(status, "Degraded") == ("True", "DevicesFailed")
    assert _cond(status, "Ready")[0] == "False"
    assert "b" in get_condition(status["conditions"], "TowersReady")["message"]  # type: ignore[index]


def test_status_capacity_paused_and_succeeded() -> None:
    status = _status(assignment={"a": [(0, 4)]})
    assert status["unassigned"] == 6
    assert _cond(status, "DevicesAssigned") == ("False", "CapacityExceeded")
    assert _cond(_status(assignment={}), "DevicesAssigned") == ("False", "NoEligibleNodes")
    assert _cond(_status(paused=True), "Ready") == ("False", "Paused")
    done = [TowerReport("a", "p", {"succeeded": 5}), TowerReport("b", "q", {"succeeded": 5})]
    assert _cond(_status(reports=done), "Succeeded") == ("True", "AllSucceeded")


def test_invalid_status_names_the_problem() -> None:
    status = invalid_status([], "spec.devices: must be >= 0", 4, "T")
    assert _cond(status, "Invalid") == ("True", "InvalidSpec")
    assert get_condition(status["conditions"], "Invalid")["message"] == (  # type: ignore[index]
        "spec.devices: must be >= 0"
    )
    assert _cond(status, "Ready") == ("False", "InvalidSpec")


def test_is_subset_decides_when_to_write() -> None:
    assert is_subset({"a": {"b": [1, {"c": 2}]}}, {"a": {"b": [1, {"c": 2, "d": 3}], "e": 1}})
    assert not is_subset({"a": [1]}, {"a": [1, 2]})
    assert not is_subset({"a": 1}, {})


def test_a_version_with_an_artifact_asks_towers_to_upgrade_in_place() -> None:
    import pytest

    from mockfleet.mock.lot import LotError
    from mockfleet.operator.builders import build_plan
    from mockfleet.tower.plan import parse_plan

    sha = "AB" * 32
    lot = make_lot(
        version="0.3.0",
        artifact={
            "source": "s3://releases/mockfleet-0.3.0.zip",
            "sha256": sha,
            "endpointUrl": "http://127.0.0.1:9000",
        },
    )
    plan = build_plan(lot, {"node-a": [(0, 10)]}, generation=4)
    assert plan["upgrade"] == {
        "version": "0.3.0",
        "source": "s3://releases/mockfleet-0.3.0.zip",
        "sha256": sha.lower(),
        "endpoint_url": "http://127.0.0.1:9000",
    }
    # the tower's plan reader takes it as an upgrade request
    up = parse_plan(json.loads(json.dumps(plan))).upgrade
    assert up is not None and up.version == "0.3.0" and up.endpoint_url == "http://127.0.0.1:9000"
    assert "upgrade" not in build_plan(make_lot(version="0.3.0"), {}, generation=1)
    with pytest.raises(LotError, match="artifact is given but version is not"):
        make_lot(artifact={"source": "/opt/mf.zip", "sha256": sha})
    with pytest.raises(LotError, match="must be s3://bucket/key or an absolute path"):
        make_lot(version="1", artifact={"source": "relative.zip", "sha256": sha})
