"""Run a real tower in a subprocess and read what it did.

Every test gets a fresh root, lots written to files, and a fixture that
SIGTERMs (then SIGKILLs) whatever the test left running and asserts that no
process is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import yaml

from support.polling import wait_for

DEVICE = str(Path(__file__).with_name("tower_device.py")) + ":run"
#: A tiny init that reaps what a killed tower leaves: ``python SUBREAPER CMD...``.
SUBREAPER = str(Path(__file__).with_name("tower_subreaper.py"))


def write_lot(
    path: Path,
    name: str,
    towertest: dict[str, Any] | None = None,
    restart: dict[str, Any] | None = None,
    sink: dict[str, Any] | None = None,
) -> Path:
    spec: dict[str, Any] = {
        "devices": 100000,
        "timing": {"interval": "1s"},
        "sink": sink or {"type": "stdout"},
    }
    if towertest is not None:
        spec["constants"] = {"towertest": towertest}
    if restart is not None:
        spec["restart"] = restart
    doc = {
        "apiVersion": "mockfleet.dev/v1alpha1",
        "kind": "MockLot",
        "metadata": {"name": name},
        "spec": spec,
    }
    path.write_text(yaml.safe_dump(doc))
    return path


class TowerProc:
    def __init__(
        self,
        root: Path,
        *extra: str,
        device: str | None = DEVICE,
        env: dict[str, str] | None = None,
        cgroup_procs: Path | None = None,
    ) -> None:
        self.root = root
        args = [sys.executable, "-m", "mockfleet.tower", "--root", str(root), *extra]
        if device:
            args += ["--device", device]
        self.stderr = open(root.parent / f"tower-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            env={**os.environ, **(env or {})},
            # into a cgroup before the exec: the zygote and every mock follow
            preexec_fn=(lambda: cgroup_procs.write_text(str(os.getpid())))
            if cgroup_procs is not None
            else None,
        )
        self.pid = self.proc.pid

    def events(self) -> list[dict[str, Any]]:
        """This tower's events (from its first start-up on; the log is shared
        with earlier towers on the same root)."""
        path = self.root / "events.jsonl"
        if not path.exists():
            return []
        out: list[dict[str, Any]] = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if out or (event["event"] == "tower-started" and event["pid"] == self.pid):
                    out.append(event)
        return out

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(
            lambda: (
                any(e["event"] == "zygote-ready" for e in self.events())
                or self.proc.poll() is not None
            ),
            timeout,
        )
        assert self.proc.poll() is None, self.log()

    def status(self) -> dict[str, Any]:
        """GET /status from the address the latest ``tower-started`` announced
        (the tower must run with ``--http``)."""
        started = [e for e in self.events() if e["event"] == "tower-started"]
        assert started and started[-1].get("http"), "the tower runs without --http"
        url = f"http://{started[-1]['http']}/status"
        with urllib.request.urlopen(url, timeout=10) as r:
            doc: dict[str, Any] = json.loads(r.read())
        return doc

    def log(self) -> str:
        if not self.stderr.closed:
            self.stderr.flush()
        return Path(self.stderr.name).read_text()[-4000:]

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.stderr.close()


def pids(root: Path) -> dict[str, int]:
    out = {}
    for p in (root / "pids").iterdir():
        with contextlib.suppress(ValueError, OSError):
            out[p.name] = json.loads(p.read_text())["pid"]
    return out


def exits(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "exited"]


def descendants() -> list[psutil.Process]:
    """Live descendants of this test process (zombies included)."""
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def kill_tree(procs: list[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()


def kill_reaper(reaper: subprocess.Popen[bytes]) -> None:
    """Kill a test subreaper (support/tower_subreaper.py) and all it still runs."""
    if reaper.poll() is None:
        for p in psutil.Process(reaper.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                p.kill()
        reaper.kill()
        reaper.wait()


@contextlib.contextmanager
def no_leftovers(extra_pids: set[int] | None = None) -> Iterator[set[int]]:
    """Assert that the test leaves no processes behind (tracked = pids the test
    knows are mocks that may have been re-parented away from us)."""
    tracked: set[int] = set(extra_pids or ())
    # processes that were there before (session fixtures such as a shared MQTT
    # broker) are not this test's leftovers and must survive it
    before = {p.pid for p in descendants()}
    try:
        yield tracked
    finally:
        leftovers = []

        def alive() -> list[Any]:
            found = [
                p
                for p in descendants()
                if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE
            ]
            for pid in tracked:
                with contextlib.suppress(psutil.Error):
                    p = psutil.Process(pid)
                    # a mock names itself mf-mock (and is still mf-zygote just after its clone)
                    name = p.name()
                    if p.status() != psutil.STATUS_ZOMBIE and (
                        "python" in name or name.startswith("mf-")
                    ):
                        found.append(p)
            return found

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            leftovers = alive()
            if not leftovers:
                break
            time.sleep(0.05)
        kill_tree(leftovers)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        zombies = [
            p for p in descendants() if p.pid not in before and p.status() == psutil.STATUS_ZOMBIE
        ]
        assert not leftovers, f"processes left behind: {[p.pid for p in leftovers]}"
        assert not zombies, f"zombies left behind: {[p.pid for p in zombies]}"
