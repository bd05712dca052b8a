"""Delete files without making the tower's loop wait for the disk.

Unlinking a file frees its blocks, and on some file systems that is a
synchronous disk operation: ext4 without a journal and mounted with
``discard`` (common on cloud VMs) sends a discard request to the device and
waits for it inside ``unlink``. Measured on such a VM, the tower's loop spent
milliseconds in each PID-file and trigger deletion, so exits waited that long
to be recorded and start bursts slowed down.

``Trash.delete`` renames the file into ``ROOT/trash/`` instead (a rename frees
nothing, so it does not wait) and a background thread unlinks it there. To
everyone else the file is gone the moment ``delete`` returns, exactly as with
``unlink``, and the order of operations on the original name is kept: a new
file written under the same name afterwards is never touched. What a tower
that died or re-executed itself left there, the next one keeps as spares
(below) or empties.

Recycling: a deleted file is first kept as a *spare* (up to ``MAX_SPARES``),
and ``refill`` rewrites a spare with a new PID file's content so the tower
renames it into place instead of creating a file. Creating a file allocates an
inode, and ext4 without a journal skips every inode freed in the last minute
(five while its inode block is dirty) one by one, reading each from the
buffer cache, so it does not hand it out again before its deletion reaches
the disk. Where files are created and deleted by the thousand, as in a start
burst that consumes a trigger per mock, each creation walked those inodes:
0.2-0.8 ms of the tower's CPU per new PID file on such a VM, against about
0.03 ms on a quiet file system. A recycled file costs neither that nor an
unlink and its discard. Only files that are safe to write are reused: a
regular file of ours, with no other link, that fits in one block (a larger
one would free blocks when shortened); anything else is emptied as before.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import queue
import stat
import threading
import time

#: Trash directory, under the tower's root.
TRASH_DIR = "trash"
#: Deleted files kept for reuse (each holds at most a block: 4 MiB at 4 KiB).
MAX_SPARES = 1024
#: A spare is rewritten only within its one block (see the module's docstring).
SPARE_BYTES = 4096


class Trash:
    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, TRASH_DIR)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        # Names unique across tower lives (an upgraded tower keeps its PID).
        self._prefix = f"{time.time_ns():x}-"
        self._seq = itertools.count()
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        # Only the tower's loop touches the spares; the thread only unlinks.
        self._spares: collections.deque[str] = collections.deque()
        self.emptied = 0
        self.recycled = 0
        for name in os.listdir(self.dir):  # left by an earlier tower: spares, or emptied
            self._keep_or_empty(os.path.join(self.dir, name))
        self._thread = threading.Thread(target=self._empty, name="mockfleet-trash", daemon=True)
        self._thread.start()

    def delete(self, path: str) -> bool:
        """Make ``path`` disappear now and free its space later; False if it did
        not exist (like ``os.unlink`` raising FileNotFoundError)."""
        dest = os.path.join(self.dir, f"{self._prefix}{next(self._seq)}")
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            return False
        except OSError:
            # e.g. on another file system: delete it in place after all
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
            return True
        self._keep_or_empty(dest)
        return True

    def refill(self, data: bytes, mode: int = 0o600) -> str | None:
        """A spare rewritten to hold exactly ``data`` (and ``mode``), ready to be
        renamed into place; None when no usable spare is left (then create
        the file as usual). Spares found unusable are emptied."""
        if len(data) > SPARE_BYTES:
            return None
        while self._spares:
            path = self._spares.pop()  # the most recently deleted: its block is cached
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                self._queue.put(path)
                continue
            try:
                st = os.fstat(fd)
                if not _reusable(st):
                    self._queue.put(path)
                    continue
                if stat.S_IMODE(st.st_mode) != mode:
                    os.fchmod(fd, mode)
                os.pwrite(fd, data, 0)
                if st.st_size > len(data):
                    os.ftruncate(fd, len(data))
            except OSError:
                self._queue.put(path)
                continue
            finally:
                os.close(fd)
            self.recycled += 1
            return path
        return None

    def _keep_or_empty(self, path: str) -> None:
        if len(self._spares) < MAX_SPARES:
            self._spares.append(path)
        else:
            self._queue.put(path)

    @property
    def spares(self) -> int:
        return len(self._spares)

    def _empty(self) -> None:
        while True:
            path = self._queue.get()
            if path is None:
                return
            with contextlib.suppress(OSError):
                os.unlink(path)
            self.emptied += 1

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued (up to ``timeout``); what is left the next tower
        empties. Spares stay in the trash directory for the next tower."""
        self._queue.put(None)
        self._thread.join(timeout)


def _reusable(st: os.stat_result) -> bool:
    """Safe to overwrite: a regular file of ours that nothing else links to (a
    trigger writer could have hard-linked it to a file it cares about), whose
    rewrite neither frees nor needs more than the one block it may hold."""
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_nlink == 1
        and st.st_uid == os.geteuid()
        and st.st_size <= SPARE_BYTES
        and st.st_blocks * 512 <= SPARE_BYTES
    )
