"""A small async Kubernetes client: the thin I/O edge of the operator.

Only the few calls the operator makes (list nodes and pods, get, create or
merge-patch a namespaced object, apply a child) over aiohttp, which kopf already runs on.
Credentials come from the kubernetes package's loaders (in-cluster service
account, else ``KUBECONFIG``), so token rotation is honoured on every request.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from mockfleet.operator.applied import apply_patch, with_shape

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP status (0 when unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {message}" if status else message)


def _load_configuration() -> Any:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except ConfigException:
        config.load_kube_config(client_configuration=cfg)
    return cfg


def collection_path(api_version: str, plural: str, namespace: str | None) -> str:
    """``/api/v1/namespaces/ns/configmaps`` and the like."""
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace is None:
        return f"{root}/{plural}"
    return f"{root}/namespaces/{quote(namespace)}/{plural}"


_PLURALS = {("v1", "ConfigMap"): "configmaps", ("apps/v1", "DaemonSet"): "daemonsets"}


def is_subset(desired: Any, current: Any) -> bool:
    """Whether ``current`` already holds everything in ``desired`` (no write needed)."""
    if isinstance(desired, Mapping):
        return isinstance(current, Mapping) and all(
            key in current and is_subset(value, current[key]) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(desired) == len(current)
            and all(is_subset(d, c) for d, c in zip(desired, current, strict=True))
        )
    return bool(desired == current)


class Kube:
    """An aiohttp session bound to one cluster."""

    def __init__(self, cfg: Any) -> None:
        self._cfg = cfg
        self._host = str(cfg.host).rstrip("/")
        ctx: ssl.SSLContext | bool = False
        if self._host.startswith("https://"):
            ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
            if cfg.cert_file:
                ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
            if not cfg.verify_ssl:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx if ctx else False),
            timeout=aiohttp.ClientTimeout(total=30),
        )

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster credentials, else the kubeconfig (``KUBECONFIG``)."""
        return cls(_load_configuration())

    async def close(self) -> None:
        """Release the connection pool."""
        await self._session.close()

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self._cfg.get_api_key_with_prefix("BearerToken")
        if token:
            headers["Authorization"] = token
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> JSON | None:
        """One API call; None for 404, a :class:`KubeError` for other failures."""
        if body is not None and content_type is None:
            content_type = "application/json"
        try:
            async with self._session.request(
                method,
                self._host + path,
                json=body,
                params=dict(params or {}),
                headers=self._headers(content_type),
            ) as resp:
                if resp.status == 404:
                    return None
                data = await resp.json(content_type=None)
                if resp.status >= 400:
                    message = data.get("message") if isinstance(data, dict) else str(data)
                    raise KubeError(resp.status, f"{method} {path}: {message}")
                return data if isinstance(data, dict) else {}
        except aiohttp.ClientError as exc:
            raise KubeError(0, f"{method} {path}: {exc}") from exc

    async def list(
        self, api_version: str, plural: str, namespace: str | None = None, selector: str = ""
    ) -> list[JSON]:
        """Items of a collection (optionally filtered by a label selector)."""
        params = {"labelSelector": selector} if selector else None
        data = await self.request(
            "GET", collection_path(api_version, plural, namespace), params=params
        )
        return list((data or {}).get("items") or [])

    async def get(self, api_version: str, plural: str, namespace: str, name: str) -> JSON | None:
        """One object, or None when it does not exist."""
        path = f"{collection_path(api_version, plural, namespace)}/{quote(name)}"
        return await self.request("GET", path)

    async def create(
        self, api_version: str, plural: str, namespace: str, body: Mapping[str, Any]
    ) -> JSON:
        """Create one namespaced object; the server's copy."""
        path = collection_path(api_version, plural, namespace)
        return await self.request("POST", path, dict(body)) or {}

    async def patch(
        self,
        api_version: str,
        plural: str,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        subresource: str = "",
    ) -> JSON | None:
        """Merge-patch one object (or its ``subresource``); None when it no longer exists."""
        path = f"{collection_path(api_version, plural, namespace)}/{quote(name)}"
        if subresource:
            path += f"/{subresource}"
        return await self.request("PATCH", path, dict(body), content_type=MERGE_PATCH)

    async def apply(self, obj: Mapping[str, Any], namespace: str) -> tuple[str, JSON]:
        """Create ``obj``, or patch it when it exists and differs, so that afterwards the
        fields we manage are exactly ``obj``'s: keys applied before and no longer in
        ``obj`` are removed (see :mod:`mockfleet.operator.applied`); fields the server
        or others own are kept.

        Returns ("created" | "patched" | "unchanged", the server's object).
        """
        api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
        plural = _PLURALS[(api_version, kind)]
        name = str(obj["metadata"]["name"])
        desired = with_shape(obj)
        current = await self.get(api_version, plural, namespace, name)
        if current is None:
            created = await self.request(
                "POST", collection_path(api_version, plural, namespace), desired
            )
            return "created", created or {}
        # The recorded shape is part of ``desired``: a removed key changes it.
        if is_subset(desired, current):
            return "unchanged", current
        path = f"{collection_path(api_version, plural, namespace)}/{quote(name)}"
        patch = apply_patch(desired, current)
        patched = await self.request("PATCH", path, patch, content_type=MERGE_PATCH)
        return "patched", patched or {}


async def fetch_json(session: aiohttp.ClientSession, url: str, timeout: float) -> Any:
    """GET a JSON document (a tower's /status)."""
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        resp.raise_for_status()
        return await resp.json(content_type=None)
