"""File sink: appends one message per line (JSON lines) to a per-device path."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

from mockfleet.mock.sinks.base import FatalSinkError, SendOutcome, Sink, Wait
from mockfleet.mock.sinks.render import render

if TYPE_CHECKING:
    from mockfleet.mock import lot


class FileSink(Sink):
    """Opens the file once (append, directories created) and flushes every
    message, so a reader tailing the file sees each line as it is sent."""

    def __init__(self, spec: lot.FileSink, names: Mapping[str, Any]) -> None:
        self.spec = spec
        self.path = render(spec.path, names, "path")
        self._fh: BinaryIO | None = None

    def open(self, wait: Wait) -> None:
        if self._fh is not None:
            return
        parent = os.path.dirname(self.path)
        try:
            if parent:
                os.makedirs(parent, exist_ok=True)
            self._fh = open(self.path, "ab")  # noqa: SIM115 - held open for the device's life
        except OSError as exc:
            raise FatalSinkError(
                f"sink.path: cannot open {self.path} for appending: {exc.strerror or exc}; "
                "choose a writable location"
            ) from None

    def send(self, body: bytes, wait: Wait) -> SendOutcome:
        if self._fh is None:
            return SendOutcome(ok=False, error="file sink is not open")
        try:
            self._fh.write(body + b"\n")
            self._fh.flush()
        except OSError as exc:
            return SendOutcome(ok=False, error=f"{self.path}: {exc.strerror or exc}")
        return SendOutcome(ok=True)

    def close(self, timeout: float) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
