"""Facts about tower pods the operator reads or writes (pure: pods are dicts).

* Where a tower answers ``/status``: the pod IP and the operator's tower port,
  unless the pod's ``mockfleet.dev/status-port`` annotation names another
  port. Real towers never set it (each pod has its own IP); it exists for
  set-ups where tower pods share an address: a sidecar proxy on another port,
  or a simulated cluster whose "pods" are local processes on 127.0.0.1.
* Which pods need a nudge after the plan changed: a ConfigMap volume is only
  refreshed when the kubelet syncs the pod (up to about a minute), but any
  change to the pod makes it sync at once. The operator therefore writes the
  plan ConfigMap's ``resourceVersion`` into the ``mockfleet.dev/plan-generation``
  annotation of every tower pod that has an older one. Only the pod is
  patched, not the DaemonSet template, so no tower restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mockfleet.mock.lot import API_GROUP

STATUS_PORT_ANNOTATION = f"{API_GROUP}/status-port"
PLAN_ANNOTATION = f"{API_GROUP}/plan-generation"


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return (pod.get("metadata") or {}).get("annotations") or {}


def status_port(pod: Mapping[str, Any], default: int) -> int:
    """The port of the pod's tower ``/status``: the annotation when valid, else ``default``."""
    raw = _annotations(pod).get(STATUS_PORT_ANNOTATION)
    try:
        port = int(str(raw))
    except ValueError:
        return default
    return port if 0 < port < 65536 else default


def is_running(pod: Mapping[str, Any]) -> bool:
    """The pod is Running and not being deleted (a terminating tower is stopping its devices)."""
    meta = pod.get("metadata") or {}
    return (pod.get("status") or {}).get("phase") == "Running" and not meta.get("deletionTimestamp")


def stale_plan_pods(pods: Iterable[Mapping[str, Any]], plan_version: str) -> list[str]:
    """Names of pods whose plan annotation is not ``plan_version`` (sorted, not terminating)."""
    stale = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp") or not meta.get("name"):
            continue
        if _annotations(pod).get(PLAN_ANNOTATION) != plan_version:
            stale.append(str(meta["name"]))
    return sorted(stale)


def plan_annotation_patch(plan_version: str) -> dict[str, Any]:
    """The merge patch that records ``plan_version`` on a tower pod."""
    return {"metadata": {"annotations": {PLAN_ANNOTATION: plan_version}}}
