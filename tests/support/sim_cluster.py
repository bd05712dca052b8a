"""A simulated cluster: the parts that run pods, stepped in one background thread.

With the emulated API server (``support.emulator_thread``) and the real
operator process this makes a cluster in which real towers run real devices:
the DaemonSet controller and garbage collector (``support.sim_controllers``)
and one kubelet per node (``support.kubelet``). Every part talks to the API
server over HTTP only, polling every ``period`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from support.kube_api import Api, Snapshot, meta
from support.kubelet import Kubelet, RunningPod
from support.sim_controllers import DaemonSetController, GarbageCollector

log = logging.getLogger("sim-cluster")


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
        # One read per pass; what the controllers change is seen on the next pass.
        seen = Snapshot.read(self.api, self.namespace)
        self.gc.step(seen)
        self.controller.step(seen)
        configmaps = {str(meta(cm)["name"]): cm for cm in seen.configmaps}
        for kubelet in self.kubelets.values():
            kubelet.step(seen.pods, configmaps)

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

    def projections(self) -> dict[str, int]:
        """How often each pod's ConfigMap volumes were projected (1 = only at start)."""
        with self._lock:
            return {pod: n for k in self.kubelets.values() for pod, n in k.projections.items()}
