"""Retry delays: capped exponential backoff with jitter (pure)."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (0-based): ``base * 2**attempt``
    capped at ``cap``, then scaled into [50%, 100%] of that so that devices
    failing together do not retry in lockstep, yet never wait beyond the cap."""
    if base <= 0:
        return 0.0
    # Bound the exponent: 2**attempt overflows floats long before it matters.
    raw = min(cap, base * 2.0 ** min(attempt, 60))
    return raw * (0.5 + 0.5 * rng.random())
