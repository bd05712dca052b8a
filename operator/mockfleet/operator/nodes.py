"""Which nodes may run a lot's towers (pure: works on Node manifests as dicts)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from mockfleet.mock.lot import MockLot, Toleration

_BLOCKING_EFFECTS = {"NoSchedule", "NoExecute"}


def is_ready(node: Mapping[str, Any]) -> bool:
    """The node's Ready condition is True, it is not cordoned and not being deleted."""
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    if (node.get("metadata") or {}).get("deletionTimestamp"):
        return False
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def matches_selector(node: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    """Every ``key: value`` of a nodeSelector is among the node's labels."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _tolerates(toleration: Toleration, taint: Mapping[str, Any]) -> bool:
    if toleration.effect and toleration.effect != taint.get("effect"):
        return False
    if toleration.operator == "Exists":
        return toleration.key in (None, "") or toleration.key == taint.get("key")
    return toleration.key == taint.get("key") and (toleration.value or "") == (
        taint.get("value") or ""
    )


def tolerates_taints(node: Mapping[str, Any], tolerations: Iterable[Toleration]) -> bool:
    """Every scheduling-blocking taint of the node is tolerated."""
    tols = list(tolerations)
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") not in _BLOCKING_EFFECTS:
            continue
        if not any(_tolerates(t, taint) for t in tols):
            return False
    return True


def eligible_nodes(nodes: Iterable[Mapping[str, Any]], lot: MockLot) -> list[str]:
    """Names of ready nodes where the lot's DaemonSet would schedule a tower, sorted.

    Node affinity is not evaluated (the DaemonSet still honours it); a node it
    excludes shows up as a tower that never reports.
    """
    tower = lot.spec.tower
    names = [
        str(node["metadata"]["name"])
        for node in nodes
        if is_ready(node)
        and matches_selector(node, tower.nodeSelector)
        and tolerates_taints(node, tower.tolerations)
    ]
    return sorted(names)


class NodeFacts(NamedTuple):
    """All of a node that decides whether a lot may use it (nothing else, so that the
    frequent status updates of a node — heartbeats, images, resources — compare equal)."""

    ready: bool
    labels: tuple[tuple[str, str], ...]
    taints: tuple[tuple[str, str, str], ...]


def node_facts(node: Mapping[str, Any]) -> NodeFacts:
    """The :class:`NodeFacts` of a Node manifest."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    taints = (node.get("spec") or {}).get("taints") or []
    return NodeFacts(
        ready=is_ready(node),
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        taints=tuple(
            sorted(
                (str(t.get("key") or ""), str(t.get("value") or ""), str(t.get("effect") or ""))
                for t in taints
            )
        ),
    )
