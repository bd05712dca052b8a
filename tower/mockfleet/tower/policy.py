"""Pure decisions of the supervisor: exit reasons, restarts, start pacing."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from mockfleet.mock.exitcodes import PERMANENT_FAILURES

FINISHED = "finished"
STOPPED = "stopped"
FORCE_KILLED = "force-killed"
CRASHED = "crashed"
LOST = "lost"

DEFAULT_RESTART: dict[str, Any] = {
    "policy": "OnFailure",
    "maxRestarts": 5,
    "backoff": 1.0,
    "maxBackoff": 60.0,
    "resetAfter": 60.0,
}


def exit_reason(code: int | None, sig: int | None, stop_requested: bool, force_killed: bool) -> str:
    """Why a mock ended. ``code`` and ``sig`` are both None when unknown."""
    if force_killed:
        return FORCE_KILLED
    if stop_requested:
        return STOPPED
    if code is None and sig is None:
        return LOST
    if code == 0:
        return FINISHED
    return CRASHED


@dataclass(frozen=True, slots=True)
class RestartDecision:
    restart: bool
    why: str
    delay: float = 0.0
    restarts: int = 0


def decide_restart(
    spec: dict[str, Any],
    reason: str,
    code: int | None,
    restarts: int,
    ran_for: float,
    rng: random.Random,
) -> RestartDecision:
    """Whether and when to start a mock again after it ended.

    ``restarts`` counts the restarts so far; a run of ``resetAfter`` seconds
    resets it. Delays grow exponentially from ``backoff`` up to ``maxBackoff``
    with +/-20 % jitter so a lot that crashed together does not restart in
    lockstep.
    """
    s = {**DEFAULT_RESTART, **spec}
    if reason in (STOPPED, FORCE_KILLED):
        return RestartDecision(False, f"{reason} mocks are never restarted")
    if code is not None and code in PERMANENT_FAILURES:
        return RestartDecision(False, f"exit code {code} is a permanent failure")
    policy = s["policy"]
    if policy == "Never":
        return RestartDecision(False, "restart policy Never")
    if policy == "OnFailure" and reason == FINISHED:
        return RestartDecision(False, "finished (restart policy OnFailure)")
    if ran_for >= float(s["resetAfter"]):
        restarts = 0
    if restarts >= int(s["maxRestarts"]):
        return RestartDecision(False, f"maxRestarts ({s['maxRestarts']}) reached")
    base = min(float(s["maxBackoff"]), float(s["backoff"]) * (2.0**restarts))
    delay = min(float(s["maxBackoff"]), base * rng.uniform(0.8, 1.2))
    return RestartDecision(True, f"restart policy {policy}", delay, restarts + 1)


class TokenBucket:
    """Start pacing: ``rate`` tokens a second, bursts up to ``burst``."""

    def __init__(self, rate: float | None, burst: float | None = None, now: float = 0.0) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate or 1.0)
        self.tokens = self.burst
        self.stamp = now

    def ready(self, now: float) -> bool:
        """Is a token available now? (Refills first; does not take it.)"""
        if self.rate is None:
            return True
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens >= 1.0

    def consume(self) -> None:
        if self.rate is not None:
            self.tokens -= 1.0

    def take(self, now: float) -> bool:
        if self.ready(now):
            self.consume()
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until the next token (after a failed ``take``)."""
        if self.rate is None:
            return 0.0
        return max(0.0, (1.0 - self.tokens) / self.rate)
