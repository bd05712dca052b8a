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
file written under the same name afterwards is never touched. Leftovers of a
tower that died or re-executed itself are emptied by the next one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import threading
import time

#: Trash directory, under the tower's root.
TRASH_DIR = "trash"


class Trash:
    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, TRASH_DIR)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        # Names unique across tower lives (an upgraded tower keeps its PID).
        self._prefix = f"{time.time_ns():x}-"
        self._seq = itertools.count()
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.emptied = 0
        for name in os.listdir(self.dir):  # left by an earlier tower
            self._queue.put(os.path.join(self.dir, name))
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
        self._queue.put(dest)
        return True

    def _empty(self) -> None:
        while True:
            path = self._queue.get()
            if path is None:
                return
            with contextlib.suppress(OSError):
                os.unlink(path)
            self.emptied += 1

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued (up to ``timeout``); what is left the next tower empties."""
        self._queue.put(None)
        self._thread.join(timeout)
