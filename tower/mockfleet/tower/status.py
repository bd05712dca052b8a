"""The tower's HTTP pages: /healthz, /status (JSON) and /metrics (Prometheus)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from mockfleet.tower.upgrade import last_failure

if TYPE_CHECKING:
    from mockfleet.tower.supervisor import Tower


def status_document(
    status: Mapping[str, Any], upgrade_error: Mapping[str, str] | None
) -> dict[str, Any]:
    """The ``/status`` body: the tower's status plus its last failed upgrade.

    The tower's version and ``upgrade_error`` are repeated in every lot's
    entry (as ``tower_version`` and ``upgrade_error``): the operator reads one
    lot's entry per tower, and a tower's version applies to all its lots.
    """
    error = dict(upgrade_error) if upgrade_error else None
    lots = {
        name: {**entry, "tower_version": status.get("version"), "upgrade_error": error}
        for name, entry in (status.get("lots") or {}).items()
    }
    return {**status, "upgrade_error": error, "lots": lots}


class StatusPages:
    def __init__(self, tower: Tower) -> None:
        self.tower = tower
        # prometheus_client (and the http.server it imports) costs a tower tens
        # of milliseconds of start-up, which an upgrade spends with every mock
        # unsupervised: it is imported on the first /metrics request instead.
        self._metrics: Callable[[], bytes] | None = None

    def handle(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        if path == "/healthz":
            ok = not self.tower.shutting_down
            return (200 if ok else 503), "text/plain", b"ok\n" if ok else b"stopping\n"
        if path == "/status":
            doc = status_document(self.tower.status(), last_failure(self.tower.root))
            return 200, "application/json", json.dumps(doc).encode() + b"\n"
        if path == "/metrics":
            if self._metrics is None:
                from mockfleet.tower.metrics import exposition

                self._metrics = exposition(self.tower)
            return 200, "text/plain; version=0.0.4; charset=utf-8", self._metrics()
        return 404, "text/plain", b"not found: try /healthz, /status or /metrics\n"
