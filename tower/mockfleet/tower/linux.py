"""Thin ctypes edges to Linux APIs the standard library does not wrap.

inotify (trigger directories), prctl (child subreaper, parent-death signal)
and /proc reads that identify a process across PID reuse. Everything here is
a direct system call: no threads, no polling.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from typing import NamedTuple

# The process's own symbols, libc's among them. Not ctypes.util.find_library,
# which runs ldconfig in a subprocess on every import (a start-up cost for
# every tower, and a stray child for whoever watches ours).
_libc = ctypes.CDLL(None, use_errno=True)

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), "prctl")


def set_child_subreaper() -> None:
    """Orphaned descendants (the double-forked mocks) are re-parented to us."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


def set_process_name(name: str) -> None:
    """The name ``top``, ``ps -o comm`` and profilers show (15 bytes at most).

    Written to ``/proc/self/comm`` (the same as prctl(PR_SET_NAME)): three
    plain system calls. A freshly forked mock names itself first thing, and a
    call through ctypes there copied some 40 pages of the zygote's memory
    (copy-on-write) that the mock never needed otherwise.
    """
    data = name.encode()[:15]
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError:
        _libc.prctl(PR_SET_NAME, ctypes.c_char_p(data), 0, 0, 0)


#: The kernel's bounds for /proc/PID/oom_score_adj.
OOM_SCORE_ADJ_MAX = 1000


def oom_score_adj() -> int:
    """This process's oom_score_adj (0 where /proc does not say)."""
    try:
        with open("/proc/self/oom_score_adj", "rb") as f:
            return int(f.read().strip() or b"0")
    except (OSError, ValueError):
        return 0


def set_oom_score_adj(value: int) -> None:
    """Set this process's oom_score_adj; raising it needs no privilege.

    Three plain system calls, as in ``set_process_name``: every new mock runs
    this before its device starts."""
    fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"%d" % value)
    finally:
        os.close(fd)


def syncfs(path: str) -> None:
    """Write back everything dirty on the file system holding ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.syncfs(fd), f"syncfs {path}")
    finally:
        os.close(fd)


class InotifyEvent(NamedTuple):
    wd: int
    mask: int
    name: str


class Inotify:
    """A non-blocking inotify instance; its fd goes into the caller's selector."""

    def __init__(self) -> None:
        self.fd = _check(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")

    def fileno(self) -> int:
        return self.fd

    def add_watch(self, path: str, mask: int) -> int:
        return _check(
            _libc.inotify_add_watch(self.fd, os.fsencode(path), ctypes.c_uint32(mask)),
            f"inotify_add_watch {path}",
        )

    def read(self) -> list[InotifyEvent]:
        """Every event queued now (possibly none)."""
        events: list[InotifyEvent] = []
        while True:
            try:
                data = os.read(self.fd, 256 * 1024)
            except BlockingIOError:
                return events
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            pos = 0
            while pos + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
                pos += _EVENT.size
                raw = data[pos : pos + length].split(b"\0", 1)[0]
                pos += length
                events.append(InotifyEvent(wd, mask, os.fsdecode(raw)))

    def close(self) -> None:
        os.close(self.fd)


# --------------------------------------------------------------------------- /proc


def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
        return f.read().strip()


class ProcStat(NamedTuple):
    """(Named tuples here, not dataclasses: the zygote imports this module, and
    dataclasses would bring inspect and ast into every mock's inherited
    memory, see mockfleet.mock.record.)"""

    pid: int
    state: str
    ppid: int
    start_ticks: int


def proc_stat(pid: int) -> ProcStat | None:
    """The process's state, parent and start time (clock ticks since boot), or
    None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    return parse_proc_stat(pid, raw)


def parse_proc_stat(pid: int, raw: bytes) -> ProcStat | None:
    # The command name may contain spaces and parentheses: split at the last ')'.
    end = raw.rfind(b")")
    if end < 0:
        return None
    fields = raw[end + 2 :].split()
    if len(fields) < 20:
        return None
    return ProcStat(pid, fields[0].decode(), int(fields[1]), int(fields[19]))
