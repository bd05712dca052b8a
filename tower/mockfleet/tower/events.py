"""The append-only event log (``ROOT/events.jsonl``): one JSON object a line.

Events are buffered during one turn of the main loop and written with one
``write`` to an O_APPEND file, so a reader never sees a torn line and
thousands of exits cost one system call.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


class EventLog:
    def __init__(self, path: str, echo: bool = False) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._pending: list[str] = []
        self._echo = echo
        self.counts: dict[str, int] = {}

    def emit(self, event: str, **fields: Any) -> None:
        record = {"ts": round(time.time(), 6), "event": event}
        record.update({k: v for k, v in fields.items() if v is not None})
        line = json.dumps(record, separators=(",", ":"), default=str)
        self._pending.append(line)
        self.counts[event] = self.counts.get(event, 0) + 1
        if self._echo:
            print(line, file=sys.stderr, flush=True)

    def flush(self) -> None:
        if not self._pending:
            return
        data = ("\n".join(self._pending) + "\n").encode()
        self._pending.clear()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        self.flush()
        os.close(self._fd)


def log(msg: str, **fields: Any) -> None:
    """A structured (JSON) line on stderr for the tower's own life events."""
    record = {"ts": round(time.time(), 3), "component": "tower", "msg": msg, **fields}
    print(json.dumps(record, default=str), file=sys.stderr, flush=True)
