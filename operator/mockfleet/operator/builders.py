"""Pure builders of the Kubernetes objects of a lot (plan ConfigMap, tower DaemonSet).

Each returns a plain manifest dict; the handlers add owner references and send
it. Keeping them pure lets tests check every field without an API server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from mockfleet.mock.lot import TOWER_PLAN_DIR, TOWER_STATE_DIR, TOWER_TMP_DIR, MockLot
from mockfleet.operator.assignment import normalise
from mockfleet.operator.names import (
    COMPONENT_TOWER,
    lot_labels,
    plan_configmap_name,
    tower_daemonset_name,
    tower_selector,
)
from mockfleet.operator.settings import OperatorSettings

PLAN_DIR = TOWER_PLAN_DIR
STATE_DIR = TOWER_STATE_DIR
LOT_KEY = "lot.yaml"
PLAN_KEY = "plan.json"
TOWER_UID = 10001
EVENT_COMPONENT = "mockfleet-operator"


#: Pod settings, not lot content: towers do not read them, and they stay out of the
#: plan so that no credential reference (or literal) lands in the ConfigMap.
_POD_ONLY = {"env", "secretVolumes"}


def lot_document(lot: MockLot) -> dict[str, Any]:
    """The validated lot as a manifest (defaults filled in, no status, no tower env/secrets)."""
    doc = lot.model_dump(
        mode="json",
        exclude={"status": True, "spec": {"tower": _POD_ONLY}},
        exclude_none=True,
    )
    meta = doc["metadata"]
    # Server-managed fields are noise for towers and would churn the ConfigMap.
    doc["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels") if meta.get(k)}
    return doc


def build_plan(
    lot: MockLot, assignment: Mapping[str, Sequence[Sequence[int]]], generation: int | None = None
) -> dict[str, Any]:
    """What towers read: which device ranges each node runs, whether to run at all,
    and (with an artifact) the version to upgrade to in place."""
    plan: dict[str, Any] = {
        "generation": generation,
        "lot": lot.name,
        "version": lot.spec.version,
        "paused": lot.spec.paused,
        "devices": lot.spec.devices,
        "nodes": {
            node: [[start, end] for start, end in normalise(ranges)]
            for node, ranges in sorted(assignment.items())
        },
    }
    artifact = lot.spec.artifact
    if artifact is not None and lot.spec.version is not None:
        upgrade = {
            "version": lot.spec.version,
            "source": artifact.source,
            "sha256": artifact.sha256.lower(),
        }
        if artifact.endpointUrl:
            upgrade["endpoint_url"] = artifact.endpointUrl
        plan["upgrade"] = upgrade
    return plan


def build_plan_configmap(
    lot: MockLot,
    assignment: Mapping[str, Sequence[Sequence[int]]],
    generation: int | None = None,
) -> dict[str, Any]:
    """The ConfigMap with ``lot.yaml`` (the validated lot) and ``plan.json`` (the assignment)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": plan_configmap_name(lot.name),
            "labels": lot_labels(lot.name, "plan", lot.spec.version),
        },
        "data": {
            LOT_KEY: yaml.safe_dump(lot_document(lot), sort_keys=False),
            PLAN_KEY: json.dumps(build_plan(lot, assignment, generation), sort_keys=True),
        },
    }


def read_plan(configmap: Mapping[str, Any]) -> dict[str, list[tuple[int, int]]]:
    """The node assignment stored in a plan ConfigMap (empty when absent or unreadable)."""
    raw = (configmap.get("data") or {}).get(PLAN_KEY)
    if not raw:
        return {}
    try:
        nodes = json.loads(raw).get("nodes", {})
        return {str(n): normalise(tuple(r) for r in ranges) for n, ranges in nodes.items()}
    except (ValueError, TypeError, AttributeError, IndexError):
        return {}


def _tolerations(lot: MockLot) -> list[dict[str, Any]]:
    return [t.model_dump(exclude_none=True) for t in lot.spec.tower.tolerations]


def build_tower_daemonset(lot: MockLot, settings: OperatorSettings) -> dict[str, Any]:
    """The DaemonSet of towers: one per node, each running its node's share of the plan."""
    tower = lot.spec.tower
    labels = lot_labels(lot.name, COMPONENT_TOWER, lot.spec.version)
    port = settings.tower_port
    container: dict[str, Any] = {
        "name": "tower",
        "image": tower.image or settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [
            "mockfleet",
            "tower",
            "--root",
            STATE_DIR,
            "--plan",
            PLAN_DIR,
            "--http",
            f"0.0.0.0:{port}",
        ],
        "env": [
            _field_env("NODE_NAME", "spec.nodeName"),
            _field_env("POD_NAME", "metadata.name"),
            _field_env("POD_NAMESPACE", "metadata.namespace"),
            {"name": "MOCKFLEET_LOT", "value": lot.name},
            # Python writes nothing next to the code: the root filesystem is read-only.
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
            {"name": "TMPDIR", "value": TOWER_TMP_DIR},
            # The lot's own come last; the lot schema keeps them clear of the names above.
            *(env.model_dump(exclude_none=True) for env in tower.env),
        ],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 20,
            "failureThreshold": 3,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "plan", "mountPath": PLAN_DIR, "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR},
            {"name": "tmp", "mountPath": TOWER_TMP_DIR},
            *(
                {"name": _secret_volume_name(i), "mountPath": vol.mountPath, "readOnly": True}
                for i, vol in enumerate(tower.secretVolumes)
            ),
        ],
    }
    if tower.resources:
        container["resources"] = {k: dict(v) for k, v in tower.resources.items()}
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": math.ceil(tower.stopGracePeriod + settings.grace_margin),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TOWER_UID,
            "runAsGroup": TOWER_UID,
            "fsGroup": TOWER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [
            {
                "name": "plan",
                "configMap": {"name": plan_configmap_name(lot.name), "defaultMode": 0o444},
            },
            {"name": "state", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            *(
                {
                    "name": _secret_volume_name(i),
                    # Owner root, group fsGroup (the tower's): readable by the tower only.
                    "secret": {"secretName": vol.secretName, "defaultMode": 0o440},
                }
                for i, vol in enumerate(tower.secretVolumes)
            ),
        ],
    }
    if tower.nodeSelector:
        pod_spec["nodeSelector"] = dict(tower.nodeSelector)
    if tower.tolerations:
        pod_spec["tolerations"] = _tolerations(lot)
    if tower.affinity:
        pod_spec["affinity"] = json.loads(json.dumps(tower.affinity))
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": tower_daemonset_name(lot.name), "labels": labels},
        "spec": {
            "selector": {"matchLabels": tower_selector(lot.name)},
            # Towers pick up plan changes themselves; a rolling restart only for the pod spec.
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            # No version label on pods: a version change reaches towers through the plan
            # and must not restart them.
            "template": {
                "metadata": {"labels": lot_labels(lot.name, COMPONENT_TOWER)},
                "spec": pod_spec,
            },
        },
    }


def _secret_volume_name(index: int) -> str:
    return f"secret-{index}"


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def build_event(
    obj: Mapping[str, Any], type_: str, reason: str, message: str, now: str
) -> dict[str, Any]:
    """A core v1 Event about ``obj`` (for passes that run outside a kopf handler)."""
    meta = obj.get("metadata") or {}
    involved = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "uid": meta.get("uid"),
    }
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{meta.get('name', 'lot')}.",
            "namespace": meta.get("namespace"),
        },
        "involvedObject": {k: v for k, v in involved.items() if v},
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": EVENT_COMPONENT},
        "reportingComponent": EVENT_COMPONENT,
        "reportingInstance": EVENT_COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
