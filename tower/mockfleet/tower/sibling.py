"""Fork a child of our parent: ``clone(CLONE_PARENT)``, which Python's
``os.fork`` cannot ask for.

The zygote forks every mock, but the tower must be each mock's parent: it
alone reaps them and learns their exit status. A plain fork needs a
throw-away intermediate process that forks the mock and exits, so that the
orphan is re-parented to the tower (a child subreaper). That costs a second
full fork and a full process teardown per batch, and every mock's memory
then hangs off a three-level chain of shared mappings (zygote, intermediate,
mock) that every later fork, fault and exit must walk under shared locks.
With CLONE_PARENT the mock is the tower's child from birth.

The system call is made through ``ctypes.PyDLL`` (the GIL stays held, as in
``os.fork``), bracketed by the interpreter's own fork hooks
(``PyOS_BeforeFork`` / ``PyOS_AfterFork_Child`` / ``PyOS_AfterFork_Parent``),
which re-initialise its locks and threads and run ``os.register_at_fork``
callbacks. C libraries' ``pthread_atfork`` handlers do not run: the zygote
is single-threaded, so no lock can be held by another thread at the fork.

``available()`` is False where the system call number is unknown or ctypes
cannot load the C library; the zygote then falls back to the double fork.

It is the default; ``MOCKFLEET_CLONE_PARENT=0`` in the tower's environment
switches it off. It used to be opt-in: on CPython 3.11 each mock kept a
little more private memory with it (200 devices: USS 2.51 -> 2.70 MiB;
later PSS 1.89-1.90 against 1.85 MiB), and the start rates it gained stayed
within the run-to-run noise of a 2-core machine, or went the wrong way
(2,000 mocks: 96 and 102 against 130 and 129 starts/s).

Measured again on CPython 3.12 with runs alternated (``tower_bench.py
--skip-supervisord --skip-upgrade``), the clone started mocks faster in 6
of 7 pairs at 1,000 mocks (5 pairs in one batch: 355-383 against 306-346
starts/s) and in 3 of 3 at 2,000 (336-394 against 298-311), at the same
PSS (0.86-0.88 MiB). On 3.11, 2 of 3 pairs. docs/performance.md has every
pair.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
from collections.abc import Callable

#: clone(2)'s number where the argument order is (flags, stack, ...) and zeros suffice
_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "arm64": 220}
CLONE_PARENT = 0x00008000


def _load() -> Callable[[int], int] | None:
    nr = _SYS_CLONE.get(os.uname().machine)  # platform.machine(), without importing platform
    if nr is None or not hasattr(ctypes, "pythonapi"):
        return None
    try:
        # the process's own symbols, libc's among them: no find_library, which
        # runs ldconfig in a subprocess on every import
        libc = ctypes.PyDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    syscall.argtypes = [
        ctypes.c_long,
        ctypes.c_ulong,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    for hook in ("PyOS_BeforeFork", "PyOS_AfterFork_Child", "PyOS_AfterFork_Parent"):
        getattr(ctypes.pythonapi, hook).restype = None
        getattr(ctypes.pythonapi, hook).argtypes = []

    def clone(flags: int) -> int:
        return int(syscall(nr, flags, None, None, None, None))

    return clone


_CLONE = _load()


def available() -> bool:
    """The system call can be made here (and was not refused)."""
    return _CLONE is not None


def enabled() -> bool:
    """Available, and not switched off (``MOCKFLEET_CLONE_PARENT=0``): see the module's note."""
    return _CLONE is not None and os.environ.get("MOCKFLEET_CLONE_PARENT", "1") != "0"


def fork_sibling() -> int:
    """Like ``os.fork``, but the child's parent is our parent. Returns 0 in
    the child and the child's PID in the caller; raises OSError on failure."""
    if _CLONE is None:
        raise OSError("clone(CLONE_PARENT) is not available here")
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _CLONE(CLONE_PARENT | signal.SIGCHLD)
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        if err in (errno.EPERM, errno.ENOSYS, errno.EINVAL):
            # refused outright (a seccomp filter, say): never ask again
            _disable()
        raise OSError(err, f"clone: {os.strerror(err)}")
    return pid


def _disable() -> None:
    global _CLONE
    _CLONE = None
