"""Operator-wide settings (from the command line or the environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_IMAGE = "ghcr.io/mockfleet/mockfleet:latest"


@dataclass(frozen=True)
class OperatorSettings:
    """What every lot gets unless its ``spec.tower`` says otherwise."""

    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    #: Port of the tower's HTTP endpoint (/healthz, /status).
    tower_port: int = 8080
    #: Seconds added to the lot's stopGracePeriod before the kubelet kills a tower.
    grace_margin: float = 5.0
    #: Seconds between status aggregations (node changes are also watched: see nodewatch).
    status_interval: float = 15.0
    #: Timeout of one GET /status to a tower.
    status_timeout: float = 3.0
    service_account: str | None = None

    @classmethod
    def from_env(cls) -> OperatorSettings:
        """Settings from ``MOCKFLEET_*`` variables (the Helm chart sets them)."""
        env = os.environ
        return cls(
            image=env.get("MOCKFLEET_TOWER_IMAGE", DEFAULT_IMAGE),
            image_pull_policy=env.get("MOCKFLEET_TOWER_IMAGE_PULL_POLICY", "IfNotPresent"),
            status_interval=float(env.get("MOCKFLEET_STATUS_INTERVAL", "15")),
            service_account=env.get("MOCKFLEET_TOWER_SERVICE_ACCOUNT") or None,
        )
