"""Simulated controller-manager parts: the DaemonSet controller and the garbage collector.

* :class:`DaemonSetController`: one pod per DaemonSet and eligible node (Ready,
  matching the pod's ``nodeSelector``; taints and affinity are not simulated),
  deleted again when the node goes away (the pod GC's job), stops matching, or
  the DaemonSet is deleted.
* :class:`GarbageCollector`: deletes ConfigMaps, DaemonSets and pods whose
  owners (by ``ownerReferences`` uid) are all gone, like background deletion.
  The emulated API server has no garbage collection, and deleting a MockLot
  must take its plan ConfigMap and tower DaemonSet with it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from mockfleet.operator.nodes import is_ready, matches_selector
from support.kube_api import Api, Snapshot, meta, owner_uids, uid

log = logging.getLogger("sim-cluster")


class DaemonSetController:
    """One pod per (DaemonSet, eligible node); see the module doc."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.api = api
        self.namespace = namespace

    def step(self, seen: Snapshot) -> None:
        nodes, daemonsets, pods = seen.nodes, seen.daemonsets, seen.pods
        live_nodes = {str(meta(n)["name"]): n for n in nodes}
        ds_uids = {uid(ds) for ds in daemonsets}
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            # Pod GC: pods of deleted nodes; the DS controller: pods of deleted DaemonSets
            # (the garbage collector would get them too) and of nodes no longer eligible.
            owned_by_ds = bool(owner_uids(pod) & ds_uids)
            if node not in live_nodes or (owner_uids(pod) and not owned_by_ds):
                self._delete(pod, "its node or DaemonSet is gone")
        for ds in daemonsets:
            template = (ds.get("spec") or {}).get("template") or {}
            selector = (template.get("spec") or {}).get("nodeSelector") or {}
            eligible = {
                name
                for name, node in live_nodes.items()
                if is_ready(node) and matches_selector(node, selector)
            }
            mine = [p for p in pods if uid(ds) in owner_uids(p)]
            have = {(p.get("spec") or {}).get("nodeName") for p in mine}
            for pod in mine:
                node = (pod.get("spec") or {}).get("nodeName")
                if node in live_nodes and node not in eligible:
                    self._delete(pod, "its node is no longer eligible")
            for node in sorted(eligible - have):
                self._create_pod(ds, template, node)

    def _delete(self, pod: Mapping[str, Any], why: str) -> None:
        name = str(meta(pod)["name"])
        if self.api.delete("v1", "pods", self.namespace, name):
            log.info("pod=%s deleted: %s", name, why)

    def _create_pod(self, ds: Mapping[str, Any], template: Mapping[str, Any], node: str) -> None:
        ds_meta = meta(ds)
        tmeta = template.get("metadata") or {}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{ds_meta['name']}-",
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "DaemonSet",
                        "name": ds_meta["name"],
                        "uid": ds_meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**json.loads(json.dumps(template.get("spec") or {})), "nodeName": node},
            "status": {"phase": "Pending"},
        }
        created = self.api.create("v1", "pods", self.namespace, pod)
        log.info("pod=%s created for node=%s", meta(created)["name"], node)


class GarbageCollector:
    """Deletes namespaced objects whose owners are all gone (background deletion)."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.collected: list[str] = []

    def step(self, seen: Snapshot) -> None:
        alive = {uid(o) for o in [*seen.lots, *seen.daemonsets]}
        dependents = {
            ("v1", "configmaps"): seen.configmaps,
            ("apps/v1", "daemonsets"): seen.daemonsets,
            ("v1", "pods"): seen.pods,
        }
        for (av, plural), objects in dependents.items():
            for obj in objects:
                owners = owner_uids(obj)
                if owners and not owners & alive and not self._an_owner_exists(obj):
                    name = str(meta(obj)["name"])
                    if self.api.delete(av, plural, self.namespace, name):
                        self.collected.append(f"{plural}/{name}")
                        log.info("%s/%s garbage-collected", plural, name)

    def _an_owner_exists(self, obj: Mapping[str, Any]) -> bool:
        """Ask the API server, as the real collector does: the snapshot may predate the owner."""
        plurals = {"MockLot": "mocklots", "DaemonSet": "daemonsets"}
        for ref in meta(obj).get("ownerReferences") or []:
            plural = plurals.get(str(ref.get("kind")))
            if plural is None:
                return True  # an owner kind this collector does not know: leave it alone
            found = self.api.get(str(ref["apiVersion"]), plural, self.namespace, str(ref["name"]))
            if found is not None and uid(found) == ref.get("uid"):
                return True
        return False
