"""Running the real operator process against an emulated API server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import yaml

T = TypeVar("T")


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_kubeconfig(path: Path, server: str, namespace: str = "default") -> Path:
    """A kubeconfig with one context pointing at ``server`` (plain HTTP, no auth)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "tester", "namespace": namespace},
            }
        ],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class OperatorProcess:
    """``mockfleet operator`` as a subprocess; its log goes to a file for failure reports."""

    def __init__(self, kubeconfig: Path, log: Path, namespace: str, status_interval: float) -> None:
        self.log = log
        env = {
            **os.environ,
            # kubernetes.config reads KUBECONFIG when imported: set it before the process starts.
            "KUBECONFIG": str(kubeconfig),
            "MOCKFLEET_STATUS_INTERVAL": str(status_interval),
            "MOCKFLEET_TOWER_IMAGE": "example.invalid/mockfleet:test",
        }
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mockfleet.operator.entry",
                "operator",
                "--namespace",
                namespace,
                "--liveness",
                f"http://127.0.0.1:{free_port()}/healthz",
            ],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def tail(self, lines: int = 60) -> str:
        """The end of the operator's log."""
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (kopf stops gracefully), then SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


async def wait_for(
    check: Callable[[], T | None] | Callable[[], Awaitable[T | None]],
    timeout: float,
    what: str,
    on_timeout: Callable[[], str] = lambda: "",
) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_timeout()}")
        await asyncio.sleep(0.1)
