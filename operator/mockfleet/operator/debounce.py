"""Run an action once per burst of triggers (the node watch's pacing)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable


class Debouncer:
    """Calls ``action`` once after a burst of :meth:`poke` calls.

    The action runs when ``quiet`` seconds pass without a poke, or ``max_delay``
    seconds after the burst's first poke, whichever comes first: a rolling
    upgrade of 100 nodes is one pass, yet a node flapping forever still gets
    passes. A poke while the action runs leads to one more run after it (the
    action reads the state afresh, so nothing is lost). A failing action is
    logged and retried ``retry`` seconds later.
    """

    def __init__(
        self,
        action: Callable[[], Awaitable[object]],
        *,
        quiet: float,
        max_delay: float,
        retry: float,
        logger: logging.Logger,
    ) -> None:
        self._action = action
        self.quiet = quiet
        self.max_delay = max_delay
        self.retry = retry
        self._logger = logger
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._busy = False
        #: Completed runs (successful or not), for logs and tests.
        self.runs = 0

    def start(self) -> None:
        """Start waiting for pokes (in the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop; a run in progress is cancelled."""
        if self._retry is not None:
            self._retry.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def poke(self) -> None:
        """Ask for a run soon."""
        self._poked.set()

    @property
    def idle(self) -> bool:
        """Nothing pending, nothing waiting for quiet, nothing running."""
        return not self._poked.is_set() and not self._busy

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._poked.wait()
            self._busy = True
            first = loop.time()
            while True:
                self._poked.clear()
                remaining = min(self.quiet, first + self.max_delay - loop.time())
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._poked.wait(), remaining)
                except TimeoutError:
                    break
            try:
                await self._action()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._logger.warning(
                    "debounced action failed, retrying in %.0fs: %s", self.retry, exc
                )
                self._retry = loop.call_later(self.retry, self.poke)
            finally:
                self._busy = False
                self.runs += 1
