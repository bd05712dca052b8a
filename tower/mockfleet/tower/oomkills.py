"""Which SIGKILLed mocks the kernel's out-of-memory killer took.

A process killed by the OOM killer ends by SIGKILL like one killed by hand:
its exit status does not tell them apart. The memory cgroup the tower runs
in does count its OOM kills (``oom_kill`` in ``memory.events`` on cgroup v2,
in ``memory.oom_control`` on v1; in a Kubernetes pod, the pod's). Each mock
that dies by a SIGKILL the tower did not send claims one kill the counter
shows and no earlier mock claimed. Two kills at once, one by hand and one by
the OOM killer, can swap their labels; nothing else can make one up.
"""

from __future__ import annotations

from pathlib import Path


def find_memory_cgroup(
    cgroup_text: str, root: Path = Path("/sys/fs/cgroup")
) -> tuple[Path, bool] | None:
    """The directory of the memory cgroup named in ``/proc/self/cgroup`` text,
    and whether it is cgroup v2; None when there is none."""
    v2: Path | None = None
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _id, controllers, path = parts
        if "memory" in controllers.split(","):
            v1 = root / "memory" / path.lstrip("/")
            if (v1 / "memory.oom_control").exists():
                return v1, False
        elif controllers == "":
            v2 = root / path.lstrip("/")
    return (v2, True) if v2 is not None and (v2 / "memory.events").exists() else None


def counter_file(cgroup_text: str, root: Path = Path("/sys/fs/cgroup")) -> Path | None:
    """The file holding ``oom_kill`` for that memory cgroup (None when there is none)."""
    found = find_memory_cgroup(cgroup_text, root)
    if found is None:
        return None
    path, v2 = found
    return path / ("memory.events" if v2 else "memory.oom_control")


def read_count(path: Path) -> int | None:
    """The ``oom_kill`` count in a ``memory.events`` or ``memory.oom_control`` file."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None


class OomKills:
    """The OOM kills of this process's memory cgroup, claimed one per mock."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.claimed = read_count(path) if path is not None else None

    @classmethod
    def of_this_process(cls) -> OomKills:
        try:
            text = Path("/proc/self/cgroup").read_text()
        except OSError:
            return cls(None)
        return cls(counter_file(text))

    def claim(self) -> bool:
        """Call for each mock that died by a SIGKILL nobody here sent: True
        when the cgroup counted an OOM kill that no earlier mock claimed."""
        if self.path is None or self.claimed is None:
            return False
        count = read_count(self.path)
        if count is None or count <= self.claimed:
            return False
        self.claimed += 1
        return True
