"""A kubelet stand-in: runs the pods bound to one simulated node as local processes.

* The container's command runs with ``mockfleet`` replaced by this Python
  (``-m mockfleet.operator.entry``); arguments and env values that name a
  volume's mount path are rewritten to the pod's directory for that volume,
  and ``fieldRef`` env (``spec.nodeName``, ``metadata.name``, ...) is resolved.
* ConfigMap volumes are projected with the kubelet's ``..data`` swap
  (``support.kubelet_projector``); other volumes are empty directories.
* The pod is reported Pending, then Running with ``Ready=True`` once the
  container's ``/healthz`` answers. A container that dies is restarted
  (``restartPolicy: Always``) and recorded in :attr:`Kubelet.crashes`.
* A deleted pod's container gets SIGTERM, then SIGKILL after the pod's
  ``terminationGracePeriodSeconds``.

All pods share 127.0.0.1, so a container port cannot be the same for every
pod: the kubelet gives each pod a free host port, rewrites the
``0.0.0.0:<containerPort>`` argument to ``127.0.0.1:<host port>`` and writes
the port into the pod's ``mockfleet.dev/status-port`` annotation, which the
operator honours.

Like a real kubelet (``configMapAndSecretChangeDetectionStrategy: Watch``), a
ConfigMap volume is refreshed when the pod is synced: when the pod object
changes and every ``sync_period`` seconds (the kubelet's ``--sync-frequency``,
1 minute by default), not the moment the ConfigMap changes. So plan changes
reach towers quickly only because the operator touches the tower pods'
``mockfleet.dev/plan-generation`` annotation. ``configmap_watch=True``
re-projects on every ConfigMap change as well.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mockfleet.operator.towerpods import STATUS_PORT_ANNOTATION
from support.k8s_operator import free_port
from support.kube_api import JSON, Api, meta, uid
from support.kubelet_projector import project

log = logging.getLogger("sim-cluster")

POD_IP = "127.0.0.1"


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
        bound = {uid(p): p for p in pods if (p.get("spec") or {}).get("nodeName") == self.node}
        for key in list(self.pods):
            if key not in bound:
                self._stop(self.pods.pop(key))
        for key, pod in bound.items():
            running = self.pods.get(key)
            if running is None:
                started = self._start(pod, configmaps)
                if started is not None:
                    self.pods[key] = started
            else:
                self._sync(running, pod, configmaps)
        self._reap()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every container (the node goes down) and wait for them."""
        for key in list(self.pods):
            self._stop(self.pods.pop(key))
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
            "metadata.name": str(meta(pod)["name"]),
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
        name = str(meta(pod)["name"])
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
        proc = self._spawn(argv, env, directory)
        try:
            running = RunningPod(
                name=name,
                uid=uid(pod),
                node=self.node,
                directory=directory,
                port=port,
                volumes=volumes,
                argv=argv,
                env=env,
                proc=proc,
                grace=float(spec.get("terminationGracePeriodSeconds") or 30),
                resource_version=str(meta(pod).get("resourceVersion") or ""),
                projected={vol: files for vol, files in sources.items() if files is not None},
                next_sync=time.monotonic() + self.sync_period,
            )
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
        except BaseException:
            # Not recorded anywhere yet: never leave the container running behind our back.
            proc.kill()
            proc.wait(10)
            raise
        self.projections[name] = 1
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
        rv = str(meta(pod).get("resourceVersion") or "")
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
