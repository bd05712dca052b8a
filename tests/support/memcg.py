"""A memory cgroup of the test's own, with a limit: real out-of-memory kills
by the kernel, confined to the processes put in it (cgroup v1 or v2, root)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


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
        if self.v2:
            text = (self.path / "memory.events").read_text()
        else:
            text = (self.path / "memory.oom_control").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def pids(self) -> list[int]:
        return [int(p) for p in self.procs.read_text().split()]


def _own_memory_cgroup() -> tuple[Path, bool] | None:
    """The directory of this process's memory cgroup, and whether it is v2."""
    v1 = v2 = None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            v1 = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
        elif controllers == "":
            v2 = Path("/sys/fs/cgroup") / path.lstrip("/")
    if v1 is not None and (v1 / "memory.limit_in_bytes").exists():
        return v1, False
    if v2 is not None and "memory" in (v2 / "cgroup.subtree_control").read_text().split():
        return v2, True
    return None


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
