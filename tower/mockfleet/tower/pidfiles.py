"""PID files: the durable record of which mocks run, with enough identity that
PID reuse never makes a tower adopt a stranger.

A record names the process by (pid, start time in clock ticks since boot,
boot id): a reused PID has another start time, a reboot another boot id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from mockfleet.tower.linux import ProcStat, proc_stat
from mockfleet.tower.triggers import atomic_write


@dataclass(frozen=True, slots=True)
class PidRecord:
    mock_id: str
    pid: int
    start_ticks: int
    boot_id: str
    lot: str
    lot_name: str
    index: int
    slot: int
    restarts: int
    started_at: float
    version: str
    restart: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # not dataclasses.asdict: its deep copy was a tenth of the tower's time per start
        return {name: getattr(self, name) for name in _FIELDS}

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_dict(), separators=(",", ":")) + "\n").encode()


_FIELDS = tuple(f.name for f in fields(PidRecord))


def parse_pid_record(data: bytes) -> PidRecord:
    """Raise ValueError (or a subclass) for anything that is not a record."""
    return pid_record_from(json.loads(data.decode("utf-8")))


def pid_record_from(obj: Any) -> PidRecord:
    """A record from its decoded JSON; ValueError or TypeError for anything else."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    rec = PidRecord(**obj)
    for name in ("pid", "start_ticks", "index", "slot", "restarts"):
        value = getattr(rec, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} is not a non-negative integer")
    if rec.pid <= 1:
        raise ValueError("pid must be greater than 1")
    return rec


def write_pid_file(
    pids_dir: str,
    tmp_dir: str,
    rec: PidRecord,
    sync_dir: bool,
    durable: bool = True,
    recycle: Callable[[bytes], str | None] | None = None,
) -> str:
    """Publish ``rec`` atomically as ``pids_dir/<mock id>``; returns the path.
    With ``durable=False`` it is visible at once but not yet fsynced.

    ``recycle`` (``Trash.refill``), with ``durable=False``, may hand back an
    old file already rewritten with the record: it is renamed into place
    instead of creating one (see ``mockfleet.tower.trash`` for why)."""
    path = os.path.join(pids_dir, rec.mock_id)
    data = rec.to_bytes()
    if recycle is not None and not durable:
        spare = recycle(data)
        if spare is not None:
            os.rename(spare, path)
            return path
    atomic_write(path, data, tmp_dir, sync_dir, durable)
    return path


def read_pid_file(path: str) -> PidRecord:
    with open(path, "rb") as f:
        data = f.read(64 * 1024)
    return parse_pid_record(data)


def reaped_after_start(reaped_boot_s: float, start_ticks: int, hz: int) -> bool:
    """Can an exit reaped at ``reaped_boot_s`` (CLOCK_BOOTTIME seconds) be that
    of the process that started at ``start_ticks`` (clock ticks since boot, as
    in /proc/PID/stat)? A PID is handed out again only after its last owner
    was reaped, so an exit reaped before the process started was an earlier
    owner's. The start is rounded down to a tick, which only accepts more."""
    return reaped_boot_s >= start_ticks / hz


def identity_matches(rec: PidRecord, boot: str, stat: ProcStat | None, me: int) -> bool:
    """Is the process described by ``stat`` the one ``rec`` names?

    A zombie only counts when it is our own child: we will reap it and learn
    how it ended; anyone else's zombie is already dead for our purposes.
    """
    if stat is None or rec.boot_id != boot or stat.start_ticks != rec.start_ticks:
        return False
    return not (stat.state in ("Z", "X") and stat.ppid != me)


def check_identity(rec: PidRecord, boot: str) -> ProcStat | None:
    """The process's stat when it is alive and is ``rec``'s process, else None."""
    stat = proc_stat(rec.pid)
    return stat if identity_matches(rec, boot, stat, os.getpid()) else None
