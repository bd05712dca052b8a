"""Standard output sink: one message per line, for pipes and quick looks."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

from mockfleet.mock.sinks.base import SendOutcome, Sink, Wait

if TYPE_CHECKING:
    from mockfleet.mock import lot


class StdoutSink(Sink):
    """Writes ``body + b"\\n"`` to standard output and flushes, so a reader (or a
    tower collecting many devices' output) sees each message as it is sent."""

    def __init__(self, spec: lot.StdoutSink, names: Mapping[str, Any]) -> None:
        self.spec = spec
        self._out: BinaryIO | None = None

    def open(self, wait: Wait) -> None:
        # Looked up at open, not import: the process may have redirected stdout.
        self._out = sys.stdout.buffer

    def send(self, body: bytes, wait: Wait) -> SendOutcome:
        out = self._out if self._out is not None else sys.stdout.buffer
        try:
            # One write per line: lines below PIPE_BUF stay whole when many
            # devices share one pipe.
            out.write(body + b"\n")
            out.flush()
        except OSError as exc:
            return SendOutcome(ok=False, error=f"stdout: {exc.strerror or exc}")
        return SendOutcome(ok=True)

    def close(self, timeout: float) -> None:
        if self._out is not None:
            with contextlib.suppress(OSError, ValueError):
                self._out.flush()
        self._out = None
