"""The contract every sink implements, and the errors the runtime acts on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from mockfleet.mock.record import Record

#: wait(seconds) -> False when the device was asked to stop meanwhile.
Wait = Callable[[float], bool]


class SinkError(Exception):
    """A send or connect that failed; the device counts it and goes on."""


class FatalSinkError(SinkError):
    """The sink can never work as configured (credentials rejected, bad CA file,
    unreadable secret): the device exits with EXIT_SINK_FATAL."""


class SendOutcome(Record):
    __slots__ = ("commands", "error", "ok", "retries")

    def __init__(
        self,
        ok: bool,
        retries: int = 0,
        error: str | None = None,
        commands: list[str] | None = None,
    ) -> None:
        self.ok = ok
        self.retries = retries
        self.error = error
        #: downlink commands that came back with this send (e.g. in an HTTP response)
        self.commands: list[str] = [] if commands is None else commands


class Sink(ABC):
    """One device's connection to the backend. Single-threaded by design: the
    device's own loop calls every method, so no locks and no threads."""

    content_type = "application/json"

    @abstractmethod
    def open(self, wait: Wait) -> None:
        """Connect. Raise FatalSinkError for a configuration that cannot work,
        SinkError for a transient failure (the runtime retries later)."""

    @abstractmethod
    def send(self, body: bytes, wait: Wait) -> SendOutcome:
        """Deliver one message, retrying as configured; never raises SinkError
        for a transient failure (it is reported in the outcome)."""

    def fileno(self) -> int | None:
        """A socket to watch for incoming data (MQTT commands), if any."""
        return None

    def on_readable(self) -> list[str]:
        """Process incoming data; return any commands received."""
        return []

    def service(self) -> list[str]:
        """Periodic upkeep (keepalive pings, pending writes); returns commands."""
        return []

    def next_service_in(self) -> float | None:
        """Seconds until ``service`` must run again, if it must."""
        return None

    @abstractmethod
    def close(self, timeout: float) -> None:
        """Disconnect cleanly within ``timeout`` seconds."""
