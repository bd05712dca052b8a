"""What the end-to-end tests on the simulated cluster read from one MockLot:
its status and conditions, spec patches, phases and deadline-bound waits.

A test module's ``Sim`` dataclass mixes this in, sets ``namespace`` and
``lot_name`` and provides ``api``, ``done`` and ``diagnostics()`` (printed
when a wait times out).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import pytest

from support.kube_api import Api
from support.polling import wait_for

T = TypeVar("T")

LOTS_API = ("mockfleet.dev/v1alpha1", "mocklots")


class LotChecks:
    namespace: ClassVar[str] = "default"
    lot_name: ClassVar[str]
    #: generous: two shared cores; each wait normally ends within seconds
    deadline: ClassVar[float] = 90.0
    #: between two checks: this process also hosts the API server and the kubelets
    poll_interval: ClassVar[float] = 0.3

    api: Api
    #: phases that passed: each test starts where the previous one left the lot
    done: set[str]

    def after(self, phase: str) -> None:
        """Skip (not fail) a phase whose predecessor failed: its failure says it all."""
        if phase not in self.done:
            pytest.skip(f"needs the earlier phase {phase!r}, which did not pass")

    def lot(self) -> dict[str, Any] | None:
        return self.api.get(*LOTS_API, self.namespace, self.lot_name)

    def status(self) -> dict[str, Any]:
        return dict((self.lot() or {}).get("status") or {})

    def condition(self, type_: str) -> dict[str, Any]:
        for cond in self.status().get("conditions") or []:
            if cond.get("type") == type_:
                return dict(cond)
        return {}

    def patch_spec(self, spec: dict[str, Any]) -> None:
        assert self.api.patch(*LOTS_API, self.namespace, self.lot_name, {"spec": spec})

    def diagnostics(self) -> str:
        return f"status={self.status()}"

    def until(self, check: Callable[[], T], what: str, timeout: float | None = None) -> T:
        """``check()``'s first truthy value; fails with diagnostics after the deadline."""
        limit = self.deadline if timeout is None else timeout
        return wait_for(check, limit, self.poll_interval, what, self.diagnostics)
