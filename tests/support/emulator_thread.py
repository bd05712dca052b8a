"""The emulated API server in a background thread with its own event loop.

Synchronous tests (and several of them sharing one cluster) then talk to it
over HTTP only, like every other client of a real API server.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import kmock

from support.k8s_emulator import KopfFriendlyEmulator

LOTS = "mockfleet.dev/v1alpha1/mocklots"


def mocklot_resource() -> Any:
    """The MockLot resource as the CRD declares it (status and scale subresources)."""
    return kmock.ResourceInfo(
        namespaced=True,
        kind="MockLot",
        singular="mocklot",
        shortnames={"ml"},
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
        subresources={"status", "scale"},
    )


class EmulatorThread:
    """``with EmulatorThread(namespaces) as api: api.url`` — an API server on 127.0.0.1."""

    def __init__(self, namespaces: list[str]) -> None:
        self.namespaces = namespaces
        self.url = ""
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="k8s-emulator", daemon=True)

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the emulated API server did not start within 30 s")
        if self._failure is not None:
            raise RuntimeError(f"the emulated API server failed: {self._failure}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to __enter__ if it happens at start
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with KopfFriendlyEmulator() as api, kmock.Server(api) as server:
            api.resources[LOTS] = mocklot_resource()
            for ns in self.namespaces:
                api.put("v1/namespaces", {"metadata": {"name": ns}})
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()
