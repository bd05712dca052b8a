"""A small synchronous client of the (emulated) API server, for test-side controllers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from mockfleet.operator.kube import collection_path

JSON = dict[str, Any]


class Api:
    """A small synchronous client of the (emulated) API server."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.http = requests.Session()

    def _path(self, api_version: str, plural: str, namespace: str | None, name: str = "") -> str:
        path = self.url + collection_path(api_version, plural, namespace)
        return f"{path}/{quote(name)}" if name else path

    def _check(self, resp: requests.Response, what: str) -> Any:
        if resp.status_code >= 400:
            raise RuntimeError(f"{what}: HTTP {resp.status_code}: {resp.text[:300]}")
        return resp.json()

    def list(
        self, api_version: str, plural: str, namespace: str | None = None, selector: str = ""
    ) -> list[JSON]:
        params = {"labelSelector": selector} if selector else {}
        resp = self.http.get(self._path(api_version, plural, namespace), params=params, timeout=10)
        return list(self._check(resp, f"list {plural}").get("items") or [])

    def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> JSON | None:
        resp = self.http.get(self._path(api_version, plural, namespace, name), timeout=10)
        if resp.status_code == 404:
            return None
        return dict(self._check(resp, f"get {plural}/{name}"))

    def create(self, api_version: str, plural: str, namespace: str | None, obj: JSON) -> JSON:
        resp = self.http.post(self._path(api_version, plural, namespace), json=obj, timeout=10)
        return dict(self._check(resp, f"create {plural}"))

    def patch(
        self, api_version: str, plural: str, namespace: str | None, name: str, body: JSON
    ) -> JSON | None:
        """Merge-patch; None when the object is gone."""
        resp = self.http.patch(
            self._path(api_version, plural, namespace, name),
            data=json.dumps(body),
            headers={"Content-Type": "application/merge-patch+json"},
            timeout=10,
        )
        if resp.status_code == 404:
            return None
        return dict(self._check(resp, f"patch {plural}/{name}"))

    def delete(self, api_version: str, plural: str, namespace: str | None, name: str) -> bool:
        """Delete; False when it was already gone."""
        resp = self.http.delete(self._path(api_version, plural, namespace, name), timeout=10)
        if resp.status_code == 404:
            return False
        self._check(resp, f"delete {plural}/{name}")
        return True

    def close(self) -> None:
        self.http.close()


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """An object's metadata (empty when missing)."""
    return obj.get("metadata") or {}


def uid(obj: Mapping[str, Any]) -> str:
    """An object's uid ("" when missing)."""
    return str(meta(obj).get("uid") or "")


def owner_uids(obj: Mapping[str, Any]) -> set[str]:
    """The uids in an object's ownerReferences."""
    return {str(ref.get("uid")) for ref in meta(obj).get("ownerReferences") or []}


@dataclass(frozen=True)
class Snapshot:
    """What the simulated controllers and kubelets look at, read once per pass."""

    nodes: list[JSON]
    lots: list[JSON]
    daemonsets: list[JSON]
    pods: list[JSON]
    configmaps: list[JSON]

    @classmethod
    def read(cls, api: Api, namespace: str) -> Snapshot:
        """Five list calls: nodes, and the namespace's lots, DaemonSets, pods, ConfigMaps."""
        return cls(
            nodes=api.list("v1", "nodes"),
            lots=api.list("mockfleet.dev/v1alpha1", "mocklots", namespace),
            daemonsets=api.list("apps/v1", "daemonsets", namespace),
            pods=api.list("v1", "pods", namespace),
            configmaps=api.list("v1", "configmaps", namespace),
        )

    def configmap(self, name: str) -> JSON | None:
        """A ConfigMap by name."""
        return next((c for c in self.configmaps if meta(c).get("name") == name), None)
