"""A memory cgroup of the test's own, with a limit: real out-of-memory kills
by the kernel, confined to the processes put in it (cgroup v1 or v2, root)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from mockfleet.tower.oomkills import find_memory_cgroup, read_count


class MemoryCgroup:
    def __init__(self, path: Path, v2: bool) -> None:
        self.path = path
        self.v2 = v2

    @property
    def procs(self) -> Path:
        """Write a PID here to move that process in (its children follow)."""
        return self.path / "cgroup.procs"

    def usage(self) -> int:
        name = "memory.current" if self.v2 else "memory.usage_in_bytes"
        return int((self.path / name).read_text())

    def set_limit(self, limit: int) -> None:
        name = "memory.max" if self.v2 else "memory.limit_in_bytes"
        (self.path / name).write_text(str(limit))

    def oom_kills(self) -> int:
        return read_count(self.path / ("memory.events" if self.v2 else "memory.oom_control")) or 0

    def pids(self) -> list[int]:
        return [int(p) for p in self.procs.read_text().split()]


def _own_memory_cgroup() -> tuple[Path, bool] | None:
    """The directory of this process's memory cgroup, and whether it is v2;
    None unless a child of it can have a memory limit."""
    found = find_memory_cgroup(Path("/proc/self/cgroup").read_text())
    if found is None or not found[1]:
        return found
    controllers = (found[0] / "cgroup.subtree_control").read_text().split()
    return found if "memory" in controllers else None


def why_not() -> str | None:
    """Why no memory cgroup can be made here, or None."""
    if os.geteuid() != 0:
        return "making a cgroup needs root"
    try:
        if _own_memory_cgroup() is None:
            return "no writable memory cgroup controller here"
    except OSError as exc:
        return f"cannot read this process's cgroups: {exc}"
    return None


@contextmanager
def memory_cgroup(name: str) -> Iterator[MemoryCgroup]:
    """A new child of this process's memory cgroup; on the way out every
    process left in it is killed and the cgroup removed."""
    found = _own_memory_cgroup()
    assert found is not None, why_not()
    parent, v2 = found
    cg = MemoryCgroup(parent / f"{name}-{os.getpid()}", v2)
    cg.path.mkdir()
    try:
        yield cg
    finally:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = cg.pids()
            if not left:
                break
            for pid in left:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        cg.path.rmdir()
