"""Names and labels of the objects the operator creates for a lot.

Kubernetes names of DaemonSets and ConfigMaps here must also be valid label
values (pods carry them), so every derived name is a DNS-1123 label of at most
63 characters; long lot names are shortened with a stable hash suffix.
"""

from __future__ import annotations

import hashlib
import re

from mockfleet.mock.lot import API_GROUP

MAX_NAME = 63
LOT_LABEL = f"{API_GROUP}/lot"
COMPONENT_TOWER = "tower"
_INVALID = re.compile(r"[^a-z0-9-]+")


def dns_label(base: str, suffix: str = "") -> str:
    """``base`` + ``suffix`` as a DNS-1123 label (<= 63 chars), unique per input."""
    clean = _INVALID.sub("-", base.lower()).strip("-") or "x"
    name = f"{clean}{suffix}"
    if len(name) <= MAX_NAME and clean == base:
        return name
    digest = hashlib.sha256(f"{base}{suffix}".encode()).hexdigest()[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 1
    return f"{clean[:keep].rstrip('-')}-{digest}{suffix}"


def plan_configmap_name(lot: str) -> str:
    """The ConfigMap holding a lot's plan."""
    return dns_label(lot, "-plan")


def tower_daemonset_name(lot: str) -> str:
    """The DaemonSet running a lot's towers."""
    return dns_label(lot, "-tower")


def lot_labels(lot: str, component: str, version: str | None = None) -> dict[str, str]:
    """Recommended ``app.kubernetes.io/*`` labels plus the lot label."""
    labels = {
        "app.kubernetes.io/name": "mockfleet",
        "app.kubernetes.io/instance": dns_label(lot),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "mockfleet",
        "app.kubernetes.io/managed-by": "mockfleet-operator",
        LOT_LABEL: dns_label(lot),
    }
    if version:
        labels["app.kubernetes.io/version"] = version[:MAX_NAME]
    return labels


def tower_selector(lot: str) -> dict[str, str]:
    """The immutable DaemonSet selector (a subset of the pod labels)."""
    return {
        "app.kubernetes.io/name": "mockfleet",
        "app.kubernetes.io/component": COMPONENT_TOWER,
        LOT_LABEL: dns_label(lot),
    }


def selector_string(labels: dict[str, str]) -> str:
    """A label selector in the ``k=v,k=v`` form (for ``.status.selector``)."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
