"""A kmock KubernetesEmulator that behaves enough like an API server for kopf.

kmock 0.8's emulator is a JSON store over HTTP. kopf needs more of the API
server's contract, which this subclass adds:

* server-owned metadata (uid, resourceVersion, creationTimestamp, namespace,
  generation bumped on spec changes), and a new resourceVersion on every
  write: kopf compares versions and re-runs handlers (then gets 409) otherwise;
* JSON-patch, where a failed ``test`` op answers 422 (kopf's optimistic
  concurrency), and merge-patch where ``null`` removes a key;
* list responses with ``kind`` and the current resourceVersion, label selectors;
* watches that start *after* that resourceVersion (no replays) and end after
  ``timeoutSeconds``;
* POST answering 201, ``generateName``, and core ``/api/v1`` discovery.

There is no garbage collection of owned objects and no admission/validation.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import enums, k8s, parsing, rendering

Resource = kmock.resource

#: Core resources served under /api/v1 (namespaced?, kind).
CORE: dict[str, tuple[bool, str]] = {
    "namespaces": (False, "Namespace"),
    "nodes": (False, "Node"),
    "pods": (True, "Pod"),
    "configmaps": (True, "ConfigMap"),
    "events": (True, "Event"),
}


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 merge-patch: dicts merge, ``None`` deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _matches_selector(labels: Mapping[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock's parser, but ``/api/v1/namespaces[/<name>]`` address the Namespace resource.

    kmock 0.8 reads ``namespaces`` as the namespace prefix and fails on the bare
    collection, which kopf lists and watches to follow namespace patterns.
    """
    parts = [p for p in path.strip("/").split("/") if p]
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) in {3, 4}:
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, None)
    return _ORIGINAL_PARSE_PATH(path)


_ORIGINAL_PARSE_PATH = parsing.parse_path
if getattr(parsing.parse_path, "__name__", "") != "_parse_path":
    # rendering.Request._parse looks the function up on the module at each request.
    parsing.parse_path = _parse_path


def _error(status: int, reason: str, message: str) -> k8s.KubernetesError:
    return k8s.KubernetesError(status=status, reason=reason, message=message, details={})


@attrs.define(kw_only=True)
class KopfFriendlyEmulator(kmock.KubernetesEmulator):
    """The emulator plus the API-server behaviour kopf relies on (see the module doc)."""

    _rv: int = attrs.field(default=0, init=False)
    _log: list[tuple[int, Resource, dict[str, Any]]] = attrs.field(factory=list, init=False)
    _changed: asyncio.Condition = attrs.field(factory=asyncio.Condition, init=False)
    _created_keys: dict[int, tuple[Resource, str | None, str]] = attrs.field(
        factory=dict, init=False
    )

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for plural, (namespaced, kind) in CORE.items():
            self.resources[f"v1/{plural}"] = kmock.ResourceInfo(
                namespaced=namespaced, kind=kind, verbs={"get", "list", "watch", "create", "patch"}
            )
        self.resources["apps/v1/daemonsets"] = kmock.ResourceInfo(
            namespaced=True, kind="DaemonSet", verbs={"get", "list", "watch", "create", "patch"}
        )

    # ------------------------------------------------------------------ helpers

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    async def _emit(self, resource: Resource, kind: str, obj: Mapping[str, Any]) -> None:
        self._log.append((self._rv, resource, {"type": kind, "object": copy.deepcopy(dict(obj))}))
        async with self._changed:
            self._changed.notify_all()

    def _kind(self, resource: Resource) -> str:
        info = self.resources[resource]
        return info.kind or str(resource.plural).capitalize()

    def _current(self, key: tuple[Resource, str | None, str]) -> dict[str, Any] | None:
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(dict(self.objects[key].raw))

    def put(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object from the test side with server metadata (no event: call early)."""
        res = Resource(resource)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta["resourceVersion"] = self._next_rv()
        self.objects[res, meta.get("namespace"), meta["name"]] = obj
        self._log.append((self._rv, res, {"type": "ADDED", "object": copy.deepcopy(obj)}))
        return obj

    # ------------------------------------------------------------------ writes

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.action in {
            enums.action.CREATE,
            enums.action.UPDATE,
            enums.action.DELETE,
        }:
            try:
                async with self._lock:
                    await self._write(request)
            except k8s.KubernetesError as exc:
                return await self._render_error(exc)
        # Skip KubernetesEmulator._handle (its writes are replaced above).
        return await k8s.KubernetesScaffold._handle(self, request)

    async def _write(self, request: rendering.Request) -> None:
        resource = request.resource
        assert resource is not None
        if request.action == enums.action.CREATE:
            await self._create(request, resource)
        elif request.name is None:
            raise _error(405, "MethodNotAllowed", "collection updates are not supported")
        elif request.action == enums.action.UPDATE:
            await self._patch(request, resource)
        else:
            await self._delete(request, resource)

    async def _create(self, request: rendering.Request, resource: Resource) -> None:
        obj = copy.deepcopy(request.data)
        if not isinstance(obj, dict):
            raise _error(400, "BadRequest", "the body must be a JSON object")
        meta = obj.setdefault("metadata", {})
        namespace = request.namespace or meta.get("namespace")
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _error(422, "Invalid", "metadata.name or generateName is required")
            meta["name"] = meta["generateName"] + secrets.token_hex(3)
        key = (resource, namespace, meta["name"])
        if self._current(key) is not None:
            raise _error(409, "AlreadyExists", f"{resource.plural} {meta['name']!r} already exists")
        if namespace is not None and self.resources[resource].namespaced is not False:
            meta["namespace"] = namespace
        meta.update(
            uid=str(uuid.uuid4()),
            creationTimestamp=_now(),
            resourceVersion=self._next_rv(),
            generation=1,
        )
        if key in self.objects:
            self.objects[key].create(obj)
        else:
            self.objects[key] = obj
        self._created_keys[request.id] = key
        await self._emit(resource, "ADDED", obj)

    async def _patch(self, request: rendering.Request, resource: Resource) -> None:
        key = (resource, request.namespace, str(request.name))
        old = self._current(key)
        if old is None:
            raise _error(404, "NotFound", f"{resource.plural} {request.name!r} not found")
        content_type = request.headers.get("Content-Type", "")
        if "json-patch" in content_type:
            try:
                new = jsonpatch.apply_patch(old, list(request.data), in_place=False)
            except jsonpatch.JsonPatchTestFailed as exc:
                raise _error(422, "Invalid", f"the patch test failed: {exc}") from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise _error(422, "Invalid", f"the patch cannot apply: {exc}") from None
        elif isinstance(request.data, dict):
            new = _merge(old, request.data)
        else:
            raise _error(400, "BadRequest", "a merge patch must be a JSON object")
        if request.subresource == "status":
            new = {**old, "status": new.get("status")}
        elif (
            self.resources[resource].subresources
            and "status" in self.resources[resource].subresources
        ):
            new["status"] = old.get("status")  # the main endpoint ignores status
        new = {k: v for k, v in new.items() if v is not None}
        meta = new.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "namespace", "name"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
        generation = int(old["metadata"].get("generation", 1))
        meta["generation"] = generation + (1 if new.get("spec") != old.get("spec") else 0)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return  # a no-op write keeps the resourceVersion, as on a real server
        meta["resourceVersion"] = self._next_rv()
        self.objects[key].history.append(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.objects[key].delete()
            await self._emit(resource, "DELETED", new)
        else:
            await self._emit(resource, "MODIFIED", new)

    async def _delete(self, request: rendering.Request, resource: Resource) -> None:
        key = (resource, request.namespace, str(request.name))
        old = self._current(key)
        if old is None:
            raise _error(404, "NotFound", f"{resource.plural} {request.name!r} not found")
        meta = old["metadata"]
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = _now()
                meta["resourceVersion"] = self._next_rv()
                self.objects[key].history.append(old)
                await self._emit(resource, "MODIFIED", old)
            return
        meta["resourceVersion"] = self._next_rv()
        self.objects[key].history.append(old)
        self.objects[key].delete()
        await self._emit(resource, "DELETED", old)

    # ------------------------------------------------------------------ reads

    async def _serve_create(self, request: rendering.Request) -> rendering.Payload:
        key = self._created_keys.pop(request.id)
        obj = self._current(key)
        assert obj is not None
        return kmock.Response(status=201, payload=obj)

    def _visible(self, request: rendering.Request) -> list[dict[str, Any]]:
        selector = request.params.get("labelSelector", "")
        out = []
        for (resource, namespace, _), obj in self.objects.items():
            if resource != request.resource or obj.deleted:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            raw = copy.deepcopy(dict(obj.raw))
            if selector and not _matches_selector(raw["metadata"].get("labels") or {}, selector):
                continue
            out.append(raw)
        return out

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        assert request.resource is not None
        if request.resource not in self._get_resources():
            raise k8s.KubernetesResourceNotFoundError()
        async with self._lock:
            items = self._visible(request)
            rv = str(self._rv)
        return {
            "apiVersion": "v1",
            "kind": f"{self._kind(request.resource)}List",
            "metadata": {"resourceVersion": rv},
            "items": items,
        }

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""  # send the headers now, like the API server does
        resource = request.resource
        assert resource is not None
        since = request.params.get("resourceVersion")
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        selector = request.params.get("labelSelector", "")
        async with self._lock:
            if since in (None, "", "0"):
                start = self._rv
                initial = [{"type": "ADDED", "object": o} for o in self._visible(request)]
            else:
                start = int(since)
                initial = []
        for event in initial:
            yield event
        position = 0
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            while position < len(self._log):
                rv, res, event = self._log[position]
                position += 1
                if rv <= start or res != resource:
                    continue
                meta = event["object"].get("metadata") or {}
                if request.namespace is not None and meta.get("namespace") != request.namespace:
                    continue
                if selector and not _matches_selector(meta.get("labels") or {}, selector):
                    continue
                yield event
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            try:
                async with self._changed:
                    # _emit appends before it takes this lock: re-check under it, then wait.
                    if position >= len(self._log):
                        await asyncio.wait_for(self._changed.wait(), timeout=remaining)
            except TimeoutError:
                return


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
