"""Make PID files durable off the tower's loop.

An ``fsync`` costs milliseconds (a journal commit) and a start burst writes
hundreds of PID files a second, so the loop never waits for one: it writes
each PID file (visible to every process at once, which is all a tower crash
needs), lets the mock run, and hands the path to this one background thread.
The thread makes a whole batch durable at a time and reports it through a
pipe in the loop's selector; only then does the loop delete the start
triggers. A machine crash (the only thing durability is for) kills the mocks
as well, so the order that matters is "PID file durable, then trigger gone":
after a reboot a start is either still queued or recorded as ``lost``.

The thread lets a batch gather for a moment, then fsyncs small batches file
by file and large ones with one ``syncfs`` of the file system, which costs
about the same whatever the batch size.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

from mockfleet.tower.linux import syncfs

#: From this many files on, one syncfs is cheaper than an fsync each (each
#: fsync is a journal commit, and the loop's creates and unlinks queue behind
#: commits: measured, the tower's CPU per start fell by a third).
SYNCFS_FROM = 16
#: How long the thread lets a batch grow before syncing it (seconds): in a
#: burst one commit then covers hundreds of PID files.
GATHER = 0.05


def fsync_path(path: str) -> None:
    """fsync a file or directory by name; a file that is gone needs nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Syncer:
    """One thread that fsyncs files handed to it in tickets.

    ``submit`` returns a ticket number; once ``done()`` (called when
    ``fileno()`` is readable) returns a number at least as large, every file
    submitted with that ticket or earlier is durable, along with the
    directories that name them.
    """

    def __init__(self, sync_from: int = SYNCFS_FROM, gather: float = GATHER) -> None:
        self._sync_from = sync_from
        self._gather = gather
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)  # a full pipe already says "look"
        self._cv = threading.Condition()
        self._paths: list[str] = []
        self._dirs: set[str] = set()
        self._submitted = 0
        self._completed = 0
        self._errors: list[str] = []
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="tower-syncer", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        return self._r

    def submit(self, paths: list[str], directory: str) -> int:
        """Queue ``paths`` (all in ``directory``); returns their ticket."""
        with self._cv:
            self._paths.extend(paths)
            self._dirs.add(directory)
            self._submitted += 1
            self._cv.notify()
            return self._submitted

    def done(self) -> tuple[int, list[str]]:
        """(highest durable ticket, errors since the last call); drains the pipe."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._r, 4096):
                pass
        with self._cv:
            errors, self._errors = self._errors, []
            return self._completed, errors

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout=30)
        os.close(self._r)
        os.close(self._w)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closing and self._completed == self._submitted:
                    self._cv.wait()
                if self._closing:
                    return
            if self._gather:
                # a burst: let more arrive so one journal commit covers them all
                time.sleep(self._gather)
            with self._cv:
                paths, self._paths = self._paths, []
                dirs, self._dirs = self._dirs, set()
                ticket = self._submitted
            errors: list[str] = []
            try:
                if len(paths) >= self._sync_from and dirs:
                    syncfs(next(iter(dirs)))
                else:
                    for path in paths:
                        fsync_path(path)
                    for directory in dirs:
                        fsync_path(directory)
            except OSError as exc:
                errors.append(f"{exc.filename or ''}: {exc.strerror or exc}")
            with self._cv:
                self._completed = ticket
                self._errors.extend(errors)
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._w, b"!")
