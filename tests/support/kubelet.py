"""The parts of a cluster that run pods, simulated with local processes.

Together with the emulated API server (``support.k8s_emulator``) these make
a "cluster" in which the real operator and real towers run:

* :class:`DaemonSetController` (the controller manager's job): one pod per
  DaemonSet and eligible node (Ready, matching the pod's ``nodeSelector``;
  taints and affinity are not simulated), deleted again when the node goes
  away, stops matching, or the DaemonSet is deleted.
* :class:`GarbageCollector`: deletes ConfigMaps, DaemonSets and pods whose
  owners (by ``ownerReferences`` uid) are all gone. The emulator has none,
  and deleting a MockLot must take its children with it.
* :class:`Kubelet`, one per simulated node: runs the pods bound to its node
  as local processes (the container's command with ``mockfleet`` replaced by
  this Python), projects ConfigMap volumes with the kubelet's ``..data`` swap,
  reports the pod Running/Ready once the container's ``/healthz`` answers,
  and SIGTERMs the container (SIGKILL after the pod's grace period) when its
  pod is deleted.

All pods share 127.0.0.1, so a container port cannot be the same for every
pod: the kubelet gives each pod a free host port, rewrites the
``0.0.0.0:<containerPort>`` argument to ``127.0.0.1:<host port>`` and writes
the port into the pod's ``mockfleet.dev/status-port`` annotation, which the
operator honours.

Like a real kubelet (``configMapAndSecretChangeDetectionStrategy: Watch``),
a ConfigMap volume is refreshed when the pod is synced: when the pod object
changes and every ``sync_period`` seconds (the kubelet's ``--sync-frequency``,
1 minute by default), not the moment the ConfigMap changes. The operator's
plan-generation annotation on tower pods is what makes plan changes arrive
quickly. ``configmap_watch=True`` re-projects on every ConfigMap change too.

Everything is polled over HTTP, like any other API client; :class:`Cluster`
steps all parts in one background thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from mockfleet.operator.kube import collection_path
from mockfleet.operator.nodes import is_ready, matches_selector
from mockfleet.operator.towerpods import STATUS_PORT_ANNOTATION
from support.k8s_operator import free_port
from support.kubelet_projector import project

log = logging.getLogger("sim-cluster")

JSON = dict[str, Any]
POD_IP = "127.0.0.1"


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


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _uid(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("uid") or "")


def _owner_uids(obj: Mapping[str, Any]) -> set[str]:
    return {str(ref.get("uid")) for ref in _meta(obj).get("ownerReferences") or []}


# --------------------------------------------------------------------------- controllers


class DaemonSetController:
    """One pod per (DaemonSet, eligible node); see the module doc."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.api = api
        self.namespace = namespace

    def step(self) -> None:
        nodes = self.api.list("v1", "nodes")
        daemonsets = self.api.list("apps/v1", "daemonsets", self.namespace)
        pods = self.api.list("v1", "pods", self.namespace)
        live_nodes = {str(_meta(n)["name"]): n for n in nodes}
        ds_uids = {_uid(ds) for ds in daemonsets}
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            # Pod GC: pods of deleted nodes; the DS controller: pods of deleted DaemonSets
            # (the garbage collector would get them too) and of nodes no longer eligible.
            owned_by_ds = bool(_owner_uids(pod) & ds_uids)
            if node not in live_nodes or (_owner_uids(pod) and not owned_by_ds):
                self._delete(pod, "its node or DaemonSet is gone")
        for ds in daemonsets:
            template = (ds.get("spec") or {}).get("template") or {}
            selector = (template.get("spec") or {}).get("nodeSelector") or {}
            eligible = {
                name
                for name, node in live_nodes.items()
                if is_ready(node) and matches_selector(node, selector)
            }
            mine = [p for p in pods if _uid(ds) in _owner_uids(p)]
            have = {(p.get("spec") or {}).get("nodeName") for p in mine}
            for pod in mine:
                node = (pod.get("spec") or {}).get("nodeName")
                if node in live_nodes and node not in eligible:
                    self._delete(pod, "its node is no longer eligible")
            for node in sorted(eligible - have):
                self._create_pod(ds, template, node)

    def _delete(self, pod: Mapping[str, Any], why: str) -> None:
        name = str(_meta(pod)["name"])
        if self.api.delete("v1", "pods", self.namespace, name):
            log.info("pod=%s deleted: %s", name, why)

    def _create_pod(self, ds: Mapping[str, Any], template: Mapping[str, Any], node: str) -> None:
        meta = _meta(ds)
        tmeta = template.get("metadata") or {}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{meta['name']}-",
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "DaemonSet",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**json.loads(json.dumps(template.get("spec") or {})), "nodeName": node},
            "status": {"phase": "Pending"},
        }
        created = self.api.create("v1", "pods", self.namespace, pod)
        log.info("pod=%s created for node=%s", _meta(created)["name"], node)


class GarbageCollector:
    """Deletes namespaced objects whose owners are all gone (background deletion)."""

    OWNERS = (("mockfleet.dev/v1alpha1", "mocklots"), ("apps/v1", "daemonsets"))
    DEPENDENTS = (("v1", "configmaps"), ("apps/v1", "daemonsets"), ("v1", "pods"))

    def __init__(self, api: Api, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.collected: list[str] = []

    def step(self) -> None:
        alive = {
            _uid(o) for av, plural in self.OWNERS for o in self.api.list(av, plural, self.namespace)
        }
        for av, plural in self.DEPENDENTS:
            for obj in self.api.list(av, plural, self.namespace):
                owners = _owner_uids(obj)
                if owners and not owners & alive:
                    name = str(_meta(obj)["name"])
                    if self.api.delete(av, plural, self.namespace, name):
                        self.collected.append(f"{plural}/{name}")
                        log.info("%s/%s garbage-collected", plural, name)


# --------------------------------------------------------------------------- kubelet


@dataclass
class RunningPod:
    """A pod this kubelet runs: its process, directories and port."""

    name: str
    uid: str
    node: str
    directory: Path
    port: int
    volumes: dict[str, Path]
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    grace: float
    ready: bool = False
    resource_version: str = ""
    projected: dict[str, dict[str, str]] = field(default_factory=dict)
    next_sync: float = 0.0
    restarts: int = 0

    @property
    def state_dir(self) -> Path | None:
        """The tower's root (the ``state`` emptyDir), if the pod has one."""
        return self.volumes.get("state")


@dataclass
class Stopping:
    pod: RunningPod
    kill_at: float


class Kubelet:
    """Runs the pods bound to one node (see the module doc)."""

    def __init__(
        self,
        api: Api,
        namespace: str,
        node: str,
        workdir: Path,
        *,
        sync_period: float = 60.0,
        configmap_watch: bool = False,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.node = node
        self.workdir = workdir / node
        self.sync_period = sync_period
        self.configmap_watch = configmap_watch
        self.pods: dict[str, RunningPod] = {}
        self.stopping: list[Stopping] = []
        #: (pod, exit code) of containers that died without being asked to.
        self.crashes: list[tuple[str, int]] = []
        #: How many times a ConfigMap volume was (re)projected, per pod.
        self.projections: dict[str, int] = {}

    # ------------------------------------------------------------------ loop

    def step(self, pods: list[JSON], configmaps: Mapping[str, JSON]) -> None:
        bound = {_uid(p): p for p in pods if (p.get("spec") or {}).get("nodeName") == self.node}
        for uid in list(self.pods):
            if uid not in bound:
                self._stop(self.pods.pop(uid))
        for uid, pod in bound.items():
            running = self.pods.get(uid)
            if running is None:
                started = self._start(pod, configmaps)
                if started is not None:
                    self.pods[uid] = started
            else:
                self._sync(running, pod, configmaps)
        self._reap()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every container (the node goes down) and wait for them."""
        for uid in list(self.pods):
            self._stop(self.pods.pop(uid))
        deadline = time.monotonic() + timeout
        while self.stopping and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for item in self.stopping:
            with contextlib.suppress(ProcessLookupError):
                item.pod.proc.kill()
            item.pod.proc.wait(10)
        self.stopping.clear()

    # ------------------------------------------------------------------ volumes

    def _volume_sources(
        self, pod: Mapping[str, Any], configmaps: Mapping[str, JSON]
    ) -> dict[str, dict[str, str] | None] | None:
        """Volume name -> files of a ConfigMap volume, or None for an emptyDir.

        None overall when a ConfigMap is missing: the pod waits (ContainerCreating).
        """
        out: dict[str, dict[str, str] | None] = {}
        for vol in (pod.get("spec") or {}).get("volumes") or []:
            if "configMap" in vol:
                cm = configmaps.get(str(vol["configMap"]["name"]))
                if cm is None:
                    return None
                out[str(vol["name"])] = {str(k): str(v) for k, v in (cm.get("data") or {}).items()}
            else:
                out[str(vol["name"])] = None
        return out

    def _project(self, running: RunningPod, name: str, files: dict[str, str]) -> None:
        if running.projected.get(name) == files:
            return
        project(running.volumes[name], files)
        running.projected[name] = dict(files)
        self.projections[running.name] = self.projections.get(running.name, 0) + 1
        log.info("node=%s pod=%s volume=%s projected", self.node, running.name, name)

    # ------------------------------------------------------------------ containers

    def _command(
        self,
        container: Mapping[str, Any],
        mounts: Mapping[str, Path],
        container_port: int,
        port: int,
    ) -> list[str]:
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if argv and argv[0] == "mockfleet":
            argv = [sys.executable, "-m", "mockfleet.operator.entry", *argv[1:]]
        out = []
        for arg in argv:
            arg = str(arg)
            if arg in mounts:
                arg = str(mounts[arg])
            elif arg == f"0.0.0.0:{container_port}":
                arg = f"{POD_IP}:{port}"
            out.append(arg)
        return out

    def _env(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], mounts: Mapping[str, Path]
    ) -> dict[str, str]:
        fields = {
            "spec.nodeName": self.node,
            "metadata.name": str(_meta(pod)["name"]),
            "metadata.namespace": self.namespace,
            "status.podIP": POD_IP,
        }
        env = dict(os.environ)
        for item in container.get("env") or []:
            if "value" in item:
                value = str(item["value"])
                env[item["name"]] = str(mounts.get(value, value))
            else:
                path = item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
                env[item["name"]] = fields.get(path, "")
        return env

    def _start(self, pod: Mapping[str, Any], configmaps: Mapping[str, JSON]) -> RunningPod | None:
        sources = self._volume_sources(pod, configmaps)
        if sources is None:
            return None
        spec = pod.get("spec") or {}
        (container,) = spec["containers"]  # towers have one container
        name = str(_meta(pod)["name"])
        directory = self.workdir / name
        volumes = {vol: directory / "volumes" / vol for vol in sources}
        for path in volumes.values():
            path.mkdir(parents=True, exist_ok=True)
        for vol, files in sources.items():
            if files is not None:
                project(volumes[vol], files)
        mounts = {
            str(m["mountPath"]): volumes[str(m["name"])]
            for m in container.get("volumeMounts") or []
        }
        ports = container.get("ports") or [{}]
        port = free_port()
        argv = self._command(container, mounts, int(ports[0].get("containerPort") or 0), port)
        env = self._env(container, pod, mounts)
        running = RunningPod(
            name=name,
            uid=_uid(pod),
            node=self.node,
            directory=directory,
            port=port,
            volumes=volumes,
            argv=argv,
            env=env,
            proc=self._spawn(argv, env, directory),
            grace=float(spec.get("terminationGracePeriodSeconds") or 30),
            resource_version=str(_meta(pod).get("resourceVersion") or ""),
            projected={vol: files for vol, files in sources.items() if files is not None},
            next_sync=time.monotonic() + self.sync_period,
        )
        self.projections[name] = 1
        self.api.patch(
            "v1",
            "pods",
            self.namespace,
            name,
            {
                "metadata": {"annotations": {STATUS_PORT_ANNOTATION: str(port)}},
                "status": {"phase": "Pending", "hostIP": POD_IP, "podIP": POD_IP},
            },
        )
        log.info("node=%s pod=%s started pid=%d port=%d", self.node, name, running.proc.pid, port)
        return running

    def _spawn(
        self, argv: list[str], env: dict[str, str], directory: Path
    ) -> subprocess.Popen[bytes]:
        with (directory / "container.log").open("ab") as out:
            return subprocess.Popen(
                argv, env=env, cwd=directory, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )

    def _healthy(self, running: RunningPod) -> bool:
        try:
            with urllib.request.urlopen(f"http://{POD_IP}:{running.port}/healthz", timeout=0.5):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def _sync(
        self, running: RunningPod, pod: Mapping[str, Any], configmaps: Mapping[str, JSON]
    ) -> None:
        code = running.proc.poll()
        if code is not None:
            # restartPolicy Always: note the crash (tests assert there is none) and restart.
            self.crashes.append((running.name, code))
            log.warning(
                "node=%s pod=%s container exited with %s: restarting", self.node, running.name, code
            )
            running.restarts += 1
            running.ready = False
            running.proc = self._spawn(running.argv, running.env, running.directory)
        if not running.ready and self._healthy(running):
            running.ready = True
            self.api.patch(
                "v1",
                "pods",
                self.namespace,
                running.name,
                {
                    "status": {
                        "phase": "Running",
                        "hostIP": POD_IP,
                        "podIP": POD_IP,
                        "conditions": [{"type": "Ready", "status": "True"}],
                    }
                },
            )
        rv = str(_meta(pod).get("resourceVersion") or "")
        now = time.monotonic()
        if rv != running.resource_version or now >= running.next_sync or self.configmap_watch:
            # A pod sync: volumes are brought up to date from the (watched) ConfigMap cache.
            running.resource_version = rv
            running.next_sync = now + self.sync_period
            sources = self._volume_sources(pod, configmaps) or {}
            for vol, files in sources.items():
                if files is not None:
                    self._project(running, vol, files)

    def _stop(self, running: RunningPod) -> None:
        log.info("node=%s pod=%s stopping (grace %.0fs)", self.node, running.name, running.grace)
        with contextlib.suppress(ProcessLookupError):
            running.proc.send_signal(signal.SIGTERM)
        self.stopping.append(Stopping(running, time.monotonic() + running.grace))

    def _reap(self) -> None:
        left = []
        for item in self.stopping:
            if item.pod.proc.poll() is not None:
                log.info(
                    "node=%s pod=%s exited %s", self.node, item.pod.name, item.pod.proc.returncode
                )
                continue
            if time.monotonic() >= item.kill_at:
                log.warning(
                    "node=%s pod=%s killed after its grace period", self.node, item.pod.name
                )
                with contextlib.suppress(ProcessLookupError):
                    item.pod.proc.kill()
            left.append(item)
        self.stopping = left


# --------------------------------------------------------------------------- all of it


class Cluster:
    """The DaemonSet controller, the garbage collector and one kubelet per node,
    stepped every ``period`` seconds in a background thread."""

    def __init__(
        self,
        api_url: str,
        namespace: str,
        nodes: list[str],
        workdir: Path,
        *,
        period: float = 0.2,
        sync_period: float = 60.0,
        configmap_watch: bool = False,
    ) -> None:
        self.api = Api(api_url)
        self.namespace = namespace
        self.period = period
        self.controller = DaemonSetController(self.api, namespace)
        self.gc = GarbageCollector(self.api, namespace)
        self.kubelets = {
            node: Kubelet(
                self.api,
                namespace,
                node,
                workdir,
                sync_period=sync_period,
                configmap_watch=configmap_watch,
            )
            for node in nodes
        }
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sim-cluster", daemon=True)

    def __enter__(self) -> Cluster:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        with self._lock:
            for kubelet in self.kubelets.values():
                kubelet.shutdown()
        self.api.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                with self._lock:
                    self.step()
            except Exception as exc:  # keep simulating; tests look at .errors
                self.errors.append(f"{type(exc).__name__}: {exc}")
                log.exception("simulated cluster step failed")

    def step(self) -> None:
        """One pass of every part (the background thread calls this)."""
        self.gc.step()
        self.controller.step()
        pods = self.api.list("v1", "pods", self.namespace)
        configmaps = {
            str(_meta(cm)["name"]): cm for cm in self.api.list("v1", "configmaps", self.namespace)
        }
        for kubelet in self.kubelets.values():
            kubelet.step(pods, configmaps)

    @contextlib.contextmanager
    def paused(self) -> Iterator[Cluster]:
        """Hold the loop (to read a consistent picture of the kubelets)."""
        with self._lock:
            yield self

    def towers(self) -> list[RunningPod]:
        """The pods running now, on all nodes (a copy of the list)."""
        with self._lock:
            return [p for k in self.kubelets.values() for p in k.pods.values()]

    def stopping(self) -> int:
        """How many containers are still shutting down."""
        with self._lock:
            return sum(len(k.stopping) for k in self.kubelets.values())

    def crashes(self) -> list[tuple[str, int]]:
        with self._lock:
            return [c for k in self.kubelets.values() for c in k.crashes]
