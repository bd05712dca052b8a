"""Downlink commands carried back to devices in HTTP responses.

An HTTP device can only be reached when it posts, so a command travels in the
response body (``{"command": "reboot"}``; the field name matches the lot's
``sink.commandField``). What to answer is a hook ``device_id -> command or
None``: tests pass a function, ``mockfleet receive --command-file`` passes a
``CommandFile``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

#: Returns the command to send to a device in the response to its post, if any.
CommandHook = Callable[[str], str | None]

#: Key of a command file entry that applies to every device without its own entry.
ALL_DEVICES = "*"


class CommandFileError(ValueError):
    """The command file cannot be read or does not hold the expected JSON object."""


def load_commands(path: Path) -> dict[str, str]:
    """Read a command file: a JSON object mapping device ids (or "*") to command names."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandFileError(f"cannot read command file {path}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CommandFileError(f"command file {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CommandFileError(
            f'command file {path} must hold a JSON object like {{"dev-1": "reboot", "*": "ping"}}'
        )
    bad = [key for key, value in doc.items() if not isinstance(value, str) or not value]
    if bad:
        raise CommandFileError(
            f"command file {path}: the command for {', '.join(map(repr, bad))} "
            "must be a non-empty string"
        )
    return doc


class CommandFile:
    """A command hook backed by a JSON file, re-read when it changes.

    Each device receives the command mapped to its id (or to "*") once, on its
    next post. Rewriting the file re-arms delivery for every device, so a
    tester can send a new round of commands while the receiver runs. A file
    that becomes unreadable or invalid keeps the previous commands in force
    (``last_error`` says why).
    """

    #: Seconds between checks of the file's modification time.
    CHECK_EVERY = 0.5

    def __init__(self, path: Path) -> None:
        self.path = path
        self._commands = load_commands(path)
        self._mtime = self._stat()
        self._checked = time.monotonic()
        self._delivered: set[str] = set()
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def _stat(self) -> int | None:
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return None

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.CHECK_EVERY:
            return
        self._checked = now
        mtime = self._stat()
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            self._commands = load_commands(self.path)
        except CommandFileError as exc:
            self.last_error = str(exc)
            return
        self.last_error = None
        self._delivered.clear()

    def __call__(self, device_id: str) -> str | None:
        with self._lock:
            self._refresh()
            if device_id in self._delivered:
                return None
            command = self._commands.get(device_id) or self._commands.get(ALL_DEVICES)
            if command is not None:
                self._delivered.add(device_id)
            return command
