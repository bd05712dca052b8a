"""Waiting on conditions with a deadline instead of sleeping and hoping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    cond: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str | None = None,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Poll ``cond`` until it returns something truthy (returned), or fail
    with AssertionError after ``timeout`` seconds, naming ``what`` was awaited
    and adding ``diagnostics()`` when given."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            msg = f"condition not met within {timeout}s: {what or cond}"
            if diagnostics is not None:
                msg += "\n" + diagnostics()
            raise AssertionError(msg)
        time.sleep(interval)
